//! Strata broker: a Kafka-compatible streaming broker.
pub mod log;
