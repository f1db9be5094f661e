//! Where `eddy serve` sends channels besides its own clients: Kafka topics
//! ([`kafka`]).

pub mod kafka;
