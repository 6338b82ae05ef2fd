//! Durability without waiting under the lock: appends, rolls and epoch changes only
//! write to the page cache and record what needs an fsync; [`PartitionLog::take_sync`]
//! hands that over as a [`SyncJob`] which the caller runs after releasing the log
//! lock, and [`PartitionLog::synced`] moves `durable_end`, the offset below which
//! everything is on disk. What deletes data (a history replacement, a follower
//! following its leader's log start) waits for `durable_end` to cover what replaces it.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use super::{epochs, io_err, LogError, PartitionLog};

/// fsyncs taken under the log lock and run after it is released, so request
/// handlers waiting for the lock never wait for the disk
/// ([`PartitionLog::take_sync`]).
#[derive(Debug)]
pub struct SyncJob {
    files: Vec<File>,
    /// Checkpoint files rewritten (by rename) since their last fsync: the leader
    /// epochs, the aborted transactions.
    checkpoints: Vec<PathBuf>,
    /// What is durable once the job succeeded.
    upto: i64,
    generation: u64,
}

impl SyncJob {
    pub fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        for path in &self.checkpoints {
            epochs::sync_file_and_dir(path)?;
        }
        Ok(())
    }
}

impl PartitionLog {
    /// Whether a sync job is wanted now: `flush.messages` was reached, or the epoch
    /// checkpoint changed (it is fsynced as soon as the lock is released).
    pub fn sync_wanted(&self) -> bool {
        self.sync_due || self.epochs.is_dirty() || self.txns.is_dirty()
    }

    /// Whether the topic asks for fsyncs (`flush.messages` or `flush.ms`); without
    /// them durability comes from replication and the page cache, as in Kafka.
    pub fn has_flush_policy(&self) -> bool {
        self.config.flush_messages != u64::MAX || self.config.flush_ms != i64::MAX
    }

    /// Takes what needs an fsync: a changed epoch checkpoint always; rolled segments
    /// and the active segment (when it holds unflushed data) when `active` is set (a
    /// caller that needs everything on disk, or `flush.ms` due) or `flush.messages`
    /// was reached, and rolled segments also whenever the topic has a flush policy.
    /// Without a policy, closed segments are fsynced only when something depends on
    /// it (a history replacement, a follower dropping segments): a background fsync
    /// of every rolled segment made every roll a burst of writeback, which cost
    /// produce throughput on a busy machine. The caller runs the job without the
    /// lock and reports it with [`PartitionLog::synced`].
    pub fn take_sync(&mut self, now_ms: i64, active: bool) -> Result<Option<SyncJob>, LogError> {
        let dir = self.dir.clone();
        let durable = active || self.sync_due || self.has_flush_policy();
        let mut files = Vec::new();
        if durable {
            for base in std::mem::take(&mut self.unsynced_segments) {
                let i = self.segment_index_for(base);
                // A segment deleted meanwhile needs no fsync.
                if let Some(seg) = self.segments.get(i).filter(|s| s.base_offset() == base) {
                    files.extend(seg.sync_handles().map_err(io_err(&dir))?);
                }
            }
        }
        let with_active = (active || self.sync_due) && self.unflushed_messages > 0;
        if with_active {
            files.extend(self.active().sync_handles().map_err(io_err(&dir))?);
            self.unflushed_messages = 0;
            self.last_flush_ms = now_ms;
        }
        self.sync_due = false;
        let checkpoints: Vec<PathBuf> = [self.epochs.take_dirty(), self.txns.take_dirty()]
            .into_iter()
            .flatten()
            .collect();
        if files.is_empty() && checkpoints.is_empty() {
            if active {
                self.last_flush_ms = now_ms;
            }
            return Ok(None);
        }
        let upto = if !durable {
            self.durable_end
        } else if with_active || self.unflushed_messages == 0 {
            self.log_end_offset()
        } else {
            self.active().base_offset()
        };
        Ok(Some(SyncJob {
            files,
            checkpoints,
            upto,
            generation: self.sync_generation,
        }))
    }

    /// Records the outcome of a job from [`PartitionLog::take_sync`].
    pub fn synced(&mut self, job: &SyncJob, ok: bool) {
        if !ok {
            self.sync_failed = true;
        }
        if ok && !self.sync_failed && job.generation == self.sync_generation {
            self.durable_end = self.durable_end.max(job.upto);
        }
    }

    /// Everything below this offset is on disk.
    pub fn durable_end(&self) -> i64 {
        if self.sync_failed {
            self.log_start_offset
        } else {
            self.durable_end
        }
    }

    /// Whether rolled segments wait for their fsync.
    pub fn has_unsynced_segments(&self) -> bool {
        !self.unsynced_segments.is_empty()
    }

    /// Whether `flush.ms` says the active segment is due for an fsync.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.unflushed_messages > 0 && now_ms - self.last_flush_ms >= self.config.flush_ms
    }

    /// fsyncs everything now, under the lock (clean shutdown only).
    pub(super) fn sync_all_now(&mut self, now_ms: i64) -> Result<(), LogError> {
        if let Some(job) = self.take_sync(now_ms, true)? {
            let ok = job.run();
            self.synced(&job, ok.is_ok());
            ok.map_err(io_err(&self.dir))?;
        }
        Ok(())
    }
}
