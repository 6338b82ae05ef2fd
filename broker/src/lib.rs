//! Strata broker: a Kafka-compatible streaming broker.
//!
//! Data path: `kafka::server` (frames) → `kafka::dispatch` (decode, route) → the
//! handler of each API → `broker::Broker` (topics) → `partition::Partition` →
//! `log::PartitionLog` (segments on disk).

pub mod admin;
pub mod alloc_guard;
pub mod app;
pub mod blocking;
pub mod broker;
pub mod clock;
pub mod config;
pub mod group;
pub mod kafka;
pub mod log;
pub mod metadata;
pub mod partition;
pub mod producer;
pub mod quorum;
pub mod quota;
pub mod replica_removal;
pub mod replicas;
pub mod replication;
pub mod security;
pub mod telemetry;
pub mod tier;
pub mod txn;

// Unit tests decode hostile input too, so they run on the broker's allocator.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: alloc_guard::GuardedAlloc = alloc_guard::GuardedAlloc;
