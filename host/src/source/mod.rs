//! Sources `eddy serve` reads events from besides HTTP ingest: Kafka
//! topics, consumed as a member of a consumer group ([`kafka`]).

pub mod decode;
pub mod kafka;
