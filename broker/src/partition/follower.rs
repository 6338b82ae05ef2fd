//! The follower's side of a replica: appending what it fetched from its leader
//! (only while it still follows that leader in that epoch), following the leader's
//! high watermark and log start, and truncating a divergent tail.

use super::{Partition, ReplicaState, Role};
use crate::log::{LogError, ValidatedRecords};

/// A follower replica's position, as its next fetch tells the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// The leader epoch it believes current.
    pub leader_epoch: i32,
    /// The epoch of its last batch (-1: none).
    pub last_epoch: i32,
    pub log_end_offset: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

impl Partition {
    /// Checks that this replica still follows `leader` in `epoch` (a fetch response
    /// may arrive after the role changed; applying it then would corrupt the log).
    pub(super) fn still_following(
        st: &ReplicaState,
        leader: i32,
        epoch: i32,
    ) -> Result<(), LogError> {
        if st.role == (Role::Follower { leader }) && st.leader_epoch == epoch {
            Ok(())
        } else {
            Err(LogError::NotLeader)
        }
    }

    /// Appends batches fetched from `leader` in `epoch`, then moves the high
    /// watermark to what the leader reported (bounded by our own log end).
    pub fn append_replicated(
        &self,
        records: ValidatedRecords,
        leader_hw: i64,
        now_ms: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<usize, LogError> {
        let st = self.replica.lock();
        Self::still_following(&st, leader, epoch)?;
        let (n, leo, sync) = {
            let mut log = self.log.lock();
            let n = log.append_replicated(records, now_ms)?;
            (n, log.log_end_offset(), log.sync_wanted())
        };
        drop(st);
        self.follower_hw(leader_hw, leo);
        if sync {
            self.sync(now_ms, false)?;
        }
        Ok(n)
    }

    /// What a fetch from `leader` asks for this replica, or `None` when it does not
    /// follow `leader`; read under one pair of locks.
    pub fn fetch_position(&self, leader: i32) -> Option<FetchPosition> {
        let st = self.replica.lock();
        if st.role != (Role::Follower { leader }) {
            return None;
        }
        let log = self.log.lock();
        Some(FetchPosition {
            leader_epoch: st.leader_epoch,
            last_epoch: log.epochs().latest_epoch(),
            log_end_offset: log.log_end_offset(),
            log_start_offset: log.log_start_offset(),
            high_watermark: *self.high_watermark.borrow(),
        })
    }

    /// Whether appending `bytes` fetched from the leader, whose log starts at
    /// `leader_start`, stays a page-cache write ([`PartitionLog::append_stays_in_memory`],
    /// and no log start to follow, which deletes files).
    pub fn replicated_append_stays_in_memory(
        &self,
        bytes: u64,
        leader_start: i64,
        now_ms: i64,
    ) -> bool {
        let log = self.log.lock();
        leader_start <= log.log_start_offset() && log.append_stays_in_memory(bytes, now_ms)
    }

    /// A follower's high watermark: the leader's, bounded by the local log end.
    pub fn follower_hw(&self, leader_hw: i64, leo: i64) {
        let hw = leader_hw.min(leo);
        self.high_watermark.send_if_modified(|cur| {
            if *cur != hw {
                *cur = hw;
                true
            } else {
                false
            }
        });
    }

    /// Truncates a divergent tail (follower side), if the role is still the one the
    /// fetch was made under.
    pub fn truncate_as_follower(
        &self,
        offset: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<(), LogError> {
        let st = self.replica.lock();
        Self::still_following(&st, leader, epoch)?;
        self.truncate_locked(offset)?;
        drop(st);
        self.sync_if_wanted(crate::clock::now_ms())
    }

    /// Truncates the log at `offset`.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        self.truncate_locked(offset)?;
        self.sync_if_wanted(crate::clock::now_ms())
    }

    pub(super) fn truncate_locked(&self, offset: i64) -> Result<(), LogError> {
        let leo = {
            let mut log = self.log.lock();
            log.truncate_to(offset)?;
            log.log_end_offset()
        };
        self.high_watermark.send_modify(|hw| *hw = (*hw).min(leo));
        Ok(())
    }

    /// Drops the whole log and restarts it empty at `offset` (a follower that fell
    /// behind the leader's log start).
    pub fn reset_to(
        &self,
        offset: i64,
        now_ms: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<(), LogError> {
        let st = self.replica.lock();
        Self::still_following(&st, leader, epoch)?;
        {
            let mut log = self.log.lock();
            log.reset_to(offset, now_ms)?;
            // An older DeleteRecords checkpoint must not hide the new log on restart.
            log.persist_log_start()?;
        }
        self.high_watermark.send_replace(offset);
        drop(st);
        self.sync_if_wanted(now_ms)
    }

    /// Drops local segments below the leader's log start
    /// ([`PartitionLog::follow_log_start`]), if the role is still the one the fetch was
    /// made under.
    pub fn follow_log_start(
        &self,
        leader_start: i64,
        now_ms: i64,
        leader: i32,
        epoch: i32,
    ) -> Result<usize, LogError> {
        for attempt in 0..2 {
            let st = self.replica.lock();
            Self::still_following(&st, leader, epoch)?;
            let mut log = self.log.lock();
            let n = log.follow_log_start(leader_start)?;
            if n > 0 || attempt == 1 || !log.sync_wanted() {
                return Ok(n);
            }
            drop(log);
            drop(st);
            // What replaces the history is not on disk yet: fsync, then delete.
            self.sync(now_ms, true)?;
        }
        Ok(0)
    }

    /// `(epoch, end)` of where `epoch` ends in the local log.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let log = self.log.lock();
        log.epochs().end_offset_for(epoch, log.log_end_offset())
    }
}
