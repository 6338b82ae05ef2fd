//! DeleteRecords: moving a partition's log start offset forward on request, Kafka's
//! `deleteRecordsOnLeader`. The leader raises its log start to the requested offset
//! (anywhere inside a segment), deletes the local segments wholly below it, and keeps
//! the offset in a checkpoint file in the partition directory, so a restart does not
//! bring the records back; followers follow the leader's log start, which travels in
//! every replica fetch response ([`PartitionLog::follow_leader_start`]).
//!
//! The requested offset is also kept as [`PartitionLog::deleted_below`] when it lies
//! below the local start, i.e. in the part of a tiered log that only the tier holds:
//! the tier stops serving remote records below it and drops the remote segments
//! wholly below it through its retention path (`tier::service`).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use tracing::info;

use super::{epochs, io_err, LogError, PartitionLog};

/// The checkpoint file, in the partition directory: the log start offset on the first
/// line, [`PartitionLog::deleted_below`] on the second.
pub const CHECKPOINT_FILE: &str = "log-start-offset.checkpoint";

/// What a DeleteRecords call did to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsDeleted {
    /// The (local) log start offset after the call.
    pub log_start_offset: i64,
    /// Local segments removed.
    pub segments: usize,
}

/// The checkpoint's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub(super) log_start: i64,
    pub(super) deleted_below: i64,
}

/// Reads the checkpoint in `dir`; `None` when there is none (never written) or it is
/// unreadable (then the segments alone say where the log starts, as before any
/// DeleteRecords).
pub(super) fn read_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let raw = fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
    let mut lines = raw.lines().map(|l| l.trim().parse::<i64>());
    match (lines.next(), lines.next()) {
        (Some(Ok(log_start)), Some(Ok(deleted_below))) if log_start >= 0 && deleted_below >= 0 => {
            Some(Checkpoint {
                log_start,
                deleted_below,
            })
        }
        _ => {
            tracing::warn!(dir = %dir.display(), "ignoring an unreadable log start offset checkpoint");
            None
        }
    }
}

/// Writes the checkpoint durably: a temporary file, fsynced, renamed over the old one,
/// and the directory fsynced for the rename.
fn write_checkpoint(dir: &Path, c: Checkpoint) -> io::Result<()> {
    let path = dir.join(CHECKPOINT_FILE);
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    writeln!(f, "{}\n{}", c.log_start, c.deleted_below)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    epochs::sync_file_and_dir(&path)
}

impl PartitionLog {
    /// No record below this offset is served, from local disk or from the tier: where
    /// DeleteRecords last put the start (0 when never used). At most the local start;
    /// below it only in a tiered log, whose older records the tier holds.
    pub fn deleted_below(&self) -> i64 {
        self.deleted_below
    }

    fn checkpoint(&self) -> Result<(), LogError> {
        let c = Checkpoint {
            log_start: self.log_start_offset,
            deleted_below: self.deleted_below,
        };
        write_checkpoint(&self.dir, c).map_err(io_err(&self.dir))
    }

    /// Applies the checkpoint when the log is opened: the log starts at the larger of
    /// the first segment's base and the checkpoint. A checkpoint past the recovered
    /// end (the tail was lost after the records were deleted) restarts the log empty
    /// there, so the deleted records cannot come back.
    pub(super) fn load_log_start_checkpoint(&mut self, now_ms: i64) -> Result<(), LogError> {
        let Some(c) = read_checkpoint(&self.dir) else {
            return Ok(());
        };
        if c.log_start > self.log_end_offset() {
            info!(dir = %self.dir.display(), start = c.log_start, end = self.log_end_offset(),
                "log start checkpoint past the recovered log end; restarting the log empty there");
            self.reset_to(c.log_start, now_ms)?;
        }
        self.log_start_offset = self.log_start_offset.max(c.log_start);
        self.deleted_below = c.deleted_below.min(self.log_start_offset);
        Ok(())
    }

    /// DeleteRecords on the leader: every record below `offset` goes. The caller has
    /// checked `offset` against the high watermark (it is at most the log end here).
    /// An offset at or below an earlier one changes nothing. The new start is on disk
    /// before any segment is removed.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<RecordsDeleted, LogError> {
        let end = self.log_end_offset();
        if offset > end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        if offset <= self.deleted_below {
            return Ok(RecordsDeleted {
                log_start_offset: self.log_start_offset,
                segments: 0,
            });
        }
        // Below the local start only the tier's part moves (a tiered log).
        self.deleted_below = offset;
        self.log_start_offset = self.log_start_offset.max(offset);
        self.checkpoint()?;
        let segments = self.drop_segments_below_start()?;
        info!(dir = %self.dir.display(), offset, start = self.log_start_offset, segments,
            "deleted records below the new log start");
        Ok(RecordsDeleted {
            log_start_offset: self.log_start_offset,
            segments,
        })
    }

    /// On a follower: moves the log start up to the leader's (bounded by this log's
    /// end), as DeleteRecords or retention moved it there, and deletes the segments
    /// wholly below it. Like [`PartitionLog::follow_log_start`] this waits until what
    /// it keeps is on disk (a compacted topic's checkpoint may start right there): it
    /// then asks for a sync job and returns `None`; the caller syncs and calls again.
    pub fn follow_leader_start(&mut self, leader_start: i64) -> Result<Option<usize>, LogError> {
        let target = leader_start.min(self.log_end_offset());
        if target <= self.log_start_offset {
            return Ok(Some(0));
        }
        if self.durable_end() < target {
            self.sync_due = true;
            return Ok(None);
        }
        self.log_start_offset = target;
        self.checkpoint()?;
        self.drop_segments_below_start().map(Some)
    }

    /// Records the current start in the checkpoint, if there is one (after the log
    /// restarted at an offset below it, which would otherwise hide records on the
    /// next open).
    pub fn persist_log_start(&mut self) -> Result<(), LogError> {
        self.deleted_below = self.deleted_below.min(self.log_start_offset);
        match read_checkpoint(&self.dir) {
            Some(c) if c.log_start != self.log_start_offset => self.checkpoint(),
            _ => Ok(()),
        }
    }

    /// Deletes the closed segments wholly below the log start (the active segment
    /// stays, even when every record in it is below the start).
    fn drop_segments_below_start(&mut self) -> Result<usize, LogError> {
        let closed = self.segments.len() - 1;
        let n = self.segments[..closed]
            .iter()
            .take_while(|s| s.next_offset() <= self.log_start_offset)
            .count();
        for seg in self.segments.drain(..n) {
            seg.delete().map_err(io_err(&self.dir))?;
        }
        if n > 0 {
            self.remove_snapshots_below_start()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::tests::make_batch;
    use super::super::{LogConfig, ValidatedRecords};
    use super::*;

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 256,
            ..LogConfig::default()
        }
    }

    fn fill(log: &mut PartitionLog, batches: i64) {
        for i in 0..batches {
            let b = make_batch(0, 4, 1000 + i, &[7u8; 60]);
            let v = ValidatedRecords::new(&b, 1 << 20).unwrap();
            log.append(v, 0, 1000 + i).unwrap();
        }
    }

    fn first_readable(log: &PartitionLog) -> i64 {
        let data = log
            .plan_read(log.log_start_offset(), 1 << 20, true)
            .unwrap()
            .read()
            .unwrap();
        let (h, _) = super::super::batch::headers(&data).next().unwrap();
        h.base_offset
    }

    #[test]
    fn deleting_records_moves_the_start_drops_whole_segments_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
        fill(&mut log, 60);
        let segments = log.segment_count();
        assert!(segments > 4);
        // Mid-segment: 101 is inside the batch [100, 104).
        let done = log.delete_records_before(101).unwrap();
        assert_eq!(done.log_start_offset, 101);
        assert!(done.segments > 0 && done.segments < segments);
        assert_eq!(log.segment_count(), segments - done.segments);
        assert_eq!(log.log_start_offset(), 101);
        assert!(matches!(
            log.plan_read(100, 1024, true),
            Err(LogError::OffsetOutOfRange { start: 101, .. })
        ));
        // The read at the start returns the batch holding it (clients skip below).
        assert_eq!(first_readable(&log), 100);
        // Lower or equal requests change nothing; past the end is refused.
        assert_eq!(log.delete_records_before(50).unwrap().log_start_offset, 101);
        assert!(log.delete_records_before(log.log_end_offset() + 1).is_err());
        log.close(0).unwrap();
        drop(log);
        let mut log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
        assert_eq!(
            log.log_start_offset(),
            101,
            "the checkpoint survives a restart"
        );
        assert_eq!(log.deleted_below(), 101);
        // Retention (with nothing old enough to delete) keeps the start there.
        assert_eq!(log.apply_retention(2000).unwrap(), 0);
        assert_eq!(log.log_start_offset(), 101);
        // Everything: the active segment stays, empty for readers.
        let end = log.log_end_offset();
        log.delete_records_before(end).unwrap();
        assert_eq!(log.segment_count(), 1);
        assert!(log
            .plan_read(end, 1024, true)
            .unwrap()
            .read()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_checkpoint_past_the_recovered_end_restarts_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
        fill(&mut log, 10);
        log.close(0).unwrap();
        drop(log);
        // As if the tail below the deleted offset was lost in a crash.
        let c = Checkpoint {
            log_start: 500,
            deleted_below: 500,
        };
        write_checkpoint(dir.path(), c).unwrap();
        let log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
        assert_eq!(log.log_start_offset(), 500);
        assert_eq!(log.log_end_offset(), 500);
    }

    #[test]
    fn a_follower_follows_the_leader_start_once_its_log_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), cfg(), true, 0).unwrap();
        fill(&mut log, 60);
        // Appended data is not fsynced yet: the follower waits for a sync.
        log.durable_end = 0;
        assert_eq!(log.follow_leader_start(150).unwrap(), None);
        let job = log.take_sync(0, true).unwrap().unwrap();
        job.run().unwrap();
        log.synced(&job, true);
        let n = log.follow_leader_start(150).unwrap().unwrap();
        assert!(n > 0);
        assert_eq!(log.log_start_offset(), 150);
        // Beyond its own end it goes no further than the end.
        let end = log.log_end_offset();
        log.follow_leader_start(end + 100).unwrap();
        assert_eq!(log.log_start_offset(), end);
        // The local start moved; nothing was deleted by request here.
        let c = read_checkpoint(dir.path()).unwrap();
        assert_eq!((c.log_start, c.deleted_below), (end, 0));
        // A restart lower (a reset) rewrites the checkpoint.
        log.reset_to(40, 0).unwrap();
        log.persist_log_start().unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap().log_start, 40);
        drop(log);
        let log = PartitionLog::open(dir.path(), cfg(), false, 0).unwrap();
        assert_eq!(log.log_start_offset(), 40);
    }
}
