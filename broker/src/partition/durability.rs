//! Durability: running the log's sync jobs without any lock held, and the periodic
//! flush.

use super::Partition;
use crate::log::LogError;

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
}
