//! Transactions (exactly-once produce and consume-transform-produce): the
//! transaction coordinator, which owns the state of every `transactional.id` whose
//! `__transaction_state` partition this broker leads, persists each state change
//! there before it acts on it, and hands the markers that end a transaction to the
//! marker writer the application runs (`kafka::txn_markers`), which writes them to
//! every partition of the transaction and reports back.
//!
//! Where the rest lives: the partition log keeps each producer's open transaction,
//! the last stable offset and the aborted transactions (`log::txn_index`); the group
//! coordinator holds transactional offset commits until their marker; Fetch and
//! ListOffsets honour `read_committed`.

pub mod coordinator;
pub mod state;
mod store;

pub use coordinator::{Completion, TransactionCoordinator, TxnConfig};

/// Name of the internal topic.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";

/// The `__transaction_state` partition of a `transactional.id`: Kafka's
/// `abs(hashCode) % partitions`, as for groups.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::group::offsets::partition_for(transactional_id, partitions)
}
