//! The log cleaner: compaction of topics whose `cleanup.policy` includes `compact`
//! (user topics, `__consumer_offsets`, `__transaction_state`).
//!
//! Where it sits: beside retention, off the data path. A background task
//! ([`service::LogCleaner`]) picks the dirtiest partition logs hosted here and, for
//! each, plans a cleaning under the partition lock ([`CleanPlan`]: the closed
//! segments below the last stable offset and old enough for
//! `min.compaction.lag.ms`), reads and rewrites them without the lock
//! ([`pass::clean`]), then swaps the rewritten segments in under the lock
//! ([`PartitionLog::install_cleaned`](crate::log::PartitionLog::install_cleaned)).
//! The active segment is never touched.
//!
//! Every replica cleans its own log, as in Kafka: cleaning keeps offsets, so the
//! leader's and a follower's logs hold the same latest record per key at the same
//! offsets, whichever of them cleaned what; a follower fetching a cleaned range from
//! its leader accepts the gaps in it.
//!
//! Crash safety: a rewritten segment is written to `<base>.log.cleaned` and fsynced,
//! renamed to `<base>.log.swap` (the commit point), its old indexes are removed and
//! it is renamed over `<base>.log`. Opening a log deletes `.cleaned` files and
//! completes `.swap` files ([`recover_swaps`]), so a kill at any step leaves either
//! the old segment or the new one, both of which hold the same latest records.

mod filter;
mod install;
mod pass;
pub mod service;

#[cfg(test)]
mod tests;

pub use filter::{check_keys, Decision, FilterError, FilterStats, OffsetMap};
pub use install::{note_gaps, recover_swaps, GAPS_MARKER};
pub use pass::{clean, CleanError, CleanPlan, Cleaned, PassStats, SegmentPlan, Throttle};

/// A compacted topic's cleaner settings (topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionConfig {
    /// `delete.retention.ms`: how long a tombstone outlives what it deletes.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`, in millionths: a log is cleaned once this share
    /// of its cleanable bytes has not been cleaned yet.
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// `min.compaction.lag.ms`: records younger than this stay uncleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log with dirty records older than this is cleaned
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio_ppm: 500_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}
