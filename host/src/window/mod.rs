//! Event-time windows and their aggregations.

pub mod agg;
