//! Durability and history replacement: running the log's sync jobs without any
//! lock held, the periodic flush, and replacing `__consumer_offsets` history with its
//! live state once that is on disk and replicated.

use super::{Partition, Role};
use crate::log::{LogError, ValidatedRecords};

impl Partition {
    /// Runs the log's pending fsyncs ([`PartitionLog::take_sync`]: rolled segments, a
    /// changed epoch checkpoint, the active segment when `active` is set or a flush
    /// policy asks) with no lock held, so nothing waits for the disk but the caller.
    /// Must be called without the replica or log lock.
    pub fn sync(&self, now_ms: i64, active: bool) -> Result<(), LogError> {
        let job = self.log.lock().take_sync(now_ms, active)?;
        let Some(job) = job else {
            return Ok(());
        };
        let result = job.run();
        self.log.lock().synced(&job, result.is_ok());
        result.map_err(|source| {
            tracing::error!(topic = %self.topic, partition = self.index, error = %source,
                "fsync failed; this replica no longer counts anything as durable");
            LogError::Io {
                path: self.dir(),
                source,
            }
        })
    }

    /// [`Partition::sync`] when the log asks for it (see [`PartitionLog::sync_wanted`]).
    pub(super) fn sync_if_wanted(&self, now_ms: i64) -> Result<(), LogError> {
        if self.log.lock().sync_wanted() {
            self.sync(now_ms, false)?;
        }
        Ok(())
    }

    /// The periodic flush: rolled segments, the epoch checkpoint, and the active
    /// segment when `flush.ms` is due. Returns whether anything was fsynced.
    pub fn sync_background(&self, now_ms: i64) -> Result<bool, LogError> {
        let (active, wanted) = {
            let log = self.log.lock();
            (
                log.flush_due(now_ms),
                log.sync_wanted() || (log.has_flush_policy() && log.has_unsynced_segments()),
            )
        };
        if !active && !wanted {
            return Ok(false);
        }
        self.sync(now_ms, active)?;
        Ok(true)
    }

    /// Rolls, appends `records` (if any) as the new start of the live data, and
    /// deletes every segment before them once the checkpoint is on disk and the high
    /// watermark has passed it (at once when this replica is the whole ISR; otherwise
    /// when the followers' fetches move the high watermark). Returns how many
    /// segments were removed now. [`Partition::write_replacement`] and
    /// [`Partition::settle_replacement`] are its two halves, for a caller that holds a
    /// lock of its own while writing and must not fsync under it.
    pub fn replace_history(
        &self,
        records: Option<ValidatedRecords>,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        self.write_replacement(records, now_ms)?;
        self.settle_replacement(now_ms)
    }

    /// Writes the checkpoint (page cache only; see [`Partition::replace_history`]).
    pub fn write_replacement(
        &self,
        records: Option<ValidatedRecords>,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(LogError::NotLeader);
        }
        self.log
            .lock()
            .replace_history(records, st.leader_epoch, now_ms)?;
        drop(st);
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// fsyncs a written checkpoint without any lock, then deletes the history it
    /// replaces if the high watermark has passed it. Returns the segments removed.
    pub fn settle_replacement(&self, now_ms: i64) -> Result<usize, LogError> {
        self.sync(now_ms, true)?;
        let st = self.replica.lock();
        if st.role != Role::Leader {
            return Ok(0);
        }
        let leo = self.log.lock().log_end_offset();
        Ok(self.update_hw(&st, leo))
    }

    /// Whether a checkpoint still waits for the high watermark before its older
    /// segments go (another checkpoint meanwhile would only add data).
    pub fn replacement_pending(&self) -> bool {
        self.log.lock().pending_replacement().is_some()
    }
}
