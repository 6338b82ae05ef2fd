//! Following the leader's log start on a follower: the segments wholly below it are
//! gone on the leader (retention, DeleteRecords), so they go here too.

use super::segment::Segment;
use super::{io_err, LogError, PartitionLog};

impl PartitionLog {
    /// On a follower: deletes the closed segments wholly below the leader's log start,
    /// which the leader trimmed away. Waits until this log holds a record at or past
    /// that start, so it is never left with less than the leader has.
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
