//! History replacement, the way `__consumer_offsets` is kept small until the log
//! cleaner exists: the live state is written as a fresh segment and every older
//! segment is deleted once that segment is on disk and replicated to the ISR
//! ([`PendingReplacement`]); followers drop what their leader replaced
//! ([`PartitionLog::follow_log_start`]).

use super::segment::Segment;
use super::{io_err, LogError, PartitionLog, ValidatedRecords};

/// "Delete the segments below `delete_below` once the high watermark reaches
/// `once_hw`": the history a replacement replaces goes only when every in-sync replica
/// has the new segment, so none of them — any of which may be elected — is ever left
/// with neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingReplacement {
    /// Where the live state starts (the base of the segment it was written to).
    pub delete_below: i64,
    /// One past the live state's last offset.
    pub once_hw: i64,
}

impl PartitionLog {
    /// Starts a fresh segment holding `records` (the live state of a compacted topic)
    /// and schedules the deletion of every older segment for when the high watermark
    /// reaches the live state's end ([`PartitionLog::apply_committed_replacement`]).
    /// Deleting at once would move the log start past followers that are in sync
    /// but have not fetched the live state yet: they would restart empty at the new
    /// start, and one elected then would hold no live state at all. A crash before
    /// the deletes only leaves duplicates of live entries, which replay harmlessly.
    pub fn replace_history(
        &mut self,
        records: Option<ValidatedRecords>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<PendingReplacement, LogError> {
        if !self.active().is_empty() {
            self.roll(now_ms)?;
        }
        let start = self.log_end_offset();
        if let Some(r) = records {
            self.append(r, leader_epoch, now_ms)?;
        }
        // The history goes only once the live state is on disk (`durable_end`); the
        // caller runs the sync job after releasing the lock.
        self.sync_due = true;
        let pending = PendingReplacement {
            delete_below: start,
            once_hw: self.log_end_offset(),
        };
        self.pending_replacement = Some(pending);
        Ok(pending)
    }

    /// The replacement whose older segments are still kept, if any.
    pub fn pending_replacement(&self) -> Option<PendingReplacement> {
        self.pending_replacement
    }

    /// Deletes the segments a pending replacement replaces once `high_watermark` has
    /// reached its end. Returns how many segments were removed.
    pub fn apply_committed_replacement(&mut self, high_watermark: i64) -> Result<usize, LogError> {
        let Some(pending) = self.pending_replacement else {
            return Ok(0);
        };
        if high_watermark < pending.once_hw || self.durable_end() < pending.once_hw {
            return Ok(0);
        }
        self.pending_replacement = None;
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[0].base_offset() < pending.delete_below {
            let seg = self.segments.remove(0);
            seg.delete().map_err(io_err(&self.dir))?;
            removed += 1;
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        self.remove_snapshots_below_start()?;
        Ok(removed)
    }

    /// On a follower: deletes the closed segments wholly below the leader's log start,
    /// which the leader compacted or trimmed away; otherwise a follower of
    /// `__consumer_offsets` (never trimmed by retention) keeps its whole history.
    /// Waits until this log holds a record at or past that start: there the leader's
    /// checkpoint begins, the only copy of the live state once the history is gone.
    pub fn follow_log_start(&mut self, leader_start: i64) -> Result<usize, LogError> {
        if leader_start <= self.log_start_offset || leader_start >= self.log_end_offset() {
            return Ok(0);
        }
        let closed = self.segments.len() - 1;
        let n = self.segments[..closed]
            .iter()
            .take_while(|s| s.next_offset() <= leader_start)
            .count();
        if n == 0 {
            return Ok(0);
        }
        // What replaces the history must be on disk before the history goes: the
        // caller syncs (without the lock) and calls again.
        if self.durable_end() <= leader_start {
            self.sync_due = true;
            return Ok(0);
        }
        let doomed: Vec<Segment> = self.segments.drain(..n).collect();
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        for seg in doomed {
            seg.delete().map_err(io_err(&self.dir))?;
        }
        self.remove_snapshots_below_start()?;
        Ok(n)
    }
}
