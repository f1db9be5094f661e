//! Window aggregates (to be written).
