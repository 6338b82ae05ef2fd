//! A partition replica hosted by this broker: its log, its role (leader or follower,
//! as the metadata quorum assigned it), the high watermark, and on the leader the
//! progress of each follower, from which the ISR and the high watermark follow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::log::{
    AbortedTxn, AppendInfo, ClosedSegment, LogConfig, LogError, PartitionLog, ReadMode, ReadPlan,
    ValidatedRecords,
};
use crate::replication::FollowerWakeups;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not serving yet (metadata not applied) or no longer a replica.
    None,
    Leader,
    Follower {
        leader: i32,
    },
}

#[derive(Debug)]
struct ReplicaState {
    role: Role,
    leader_epoch: i32,
    isr: Vec<i32>,
    replicas: Vec<i32>,
    followers: HashMap<i32, FollowerProgress>,
    /// An ISR change proposed to the controller and not yet seen in metadata.
    isr_proposed_at: Option<i64>,
}

#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    /// This broker's id.
    me: i32,
    log: Mutex<PartitionLog>,
    /// Consumers see offsets below the high watermark; published on every change, and
    /// poked (unchanged) when the role changes so waiters re-check it.
    high_watermark: watch::Sender<i64>,
    replica: Mutex<ReplicaState>,
    /// Woken for this partition's followers on every append here; their fetches
    /// long-poll on it.
    appended: Arc<FollowerWakeups>,
}

/// What a fetch gets back from one partition.
#[derive(Debug)]
pub struct FetchSnapshot {
    pub plan: ReadPlan,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For `read_committed`: the aborted transactions with records in the range
    /// read, which the client skips.
    pub aborted: Vec<AbortedTxn>,
}

/// What a consumer may see (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Everything below the last stable offset, with the aborted transactions listed.
    ReadCommitted,
}

impl Isolation {
    /// From the Fetch / ListOffsets `isolation_level` field.
    pub fn from_level(level: i8) -> Self {
        if level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        }
    }
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        me: i32,
        appended: Arc<FollowerWakeups>,
    ) -> Self {
        let (tx, _) = watch::channel(log.log_start_offset());
        Partition {
            topic,
            index,
            me,
            log: Mutex::new(log),
            high_watermark: tx,
            replica: Mutex::new(ReplicaState {
                role: Role::None,
                leader_epoch: -1,
                isr: Vec::new(),
                replicas: Vec::new(),
                followers: HashMap::new(),
                isr_proposed_at: None,
            }),
            appended,
        }
    }

    /// A single-replica partition led by broker 0, outside any cluster (tools, tests).
    pub fn standalone(topic: Arc<str>, index: i32, log: PartitionLog) -> Self {
        let p = Partition::new(topic, index, log, 0, Arc::default());
        p.set_role(Role::Leader, 0, &[0], &[0], 0);
        p
    }

    pub fn role(&self) -> Role {
        self.replica.lock().role
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.lock().leader_epoch
    }

    pub fn isr(&self) -> Vec<i32> {
        self.replica.lock().isr.clone()
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.lock().log_start_offset()
    }

    /// Whether a client may be told offsets now: OFFSET_NOT_AVAILABLE (retriable)
    /// while a new leader's high watermark is below the start of its epoch, as Kafka
    /// answers ListOffsets (KIP-207). Until its followers fetch again, a new leader
    /// only knows the high watermark it had as a follower, which may lag behind
    /// records the previous leader acknowledged; a reader given it as the log end
    /// would stop short of acknowledged records.
    pub fn check_offsets_available(&self) -> Result<(), ResponseError> {
        let start = {
            let st = self.replica.lock();
            let log = self.log.lock();
            log.epochs().start_of(st.leader_epoch)
        };
        match start {
            Some(start) if self.high_watermark() < start => Err(ResponseError::OffsetNotAvailable),
            _ => Ok(()),
        }
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.lock().log_end_offset()
    }

    /// `(latest epoch in the log, log end offset)`.
    pub fn last_epoch_and_end(&self) -> (i32, i64) {
        let log = self.log.lock();
        (log.epochs().latest_epoch(), log.log_end_offset())
    }

    pub fn log_config(&self) -> LogConfig {
        self.log.lock().config().clone()
    }

    pub fn set_log_config(&self, c: LogConfig) {
        self.log.lock().set_config(c);
    }

    /// Applies the role the metadata assigns. A new leader epoch starts at the
    /// current log end; an unchanged epoch only refreshes the ISR and replica list.
    pub fn set_role(&self, role: Role, leader_epoch: i32, isr: &[i32], replicas: &[i32], now: i64) {
        let mut st = self.replica.lock();
        let changed = st.role != role || st.leader_epoch != leader_epoch;
        if changed && role == Role::Leader {
            let mut log = self.log.lock();
            if let Err(e) = log.start_epoch(leader_epoch) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot checkpoint leader epoch");
            }
            // Followers start with a clean slate; ISR members get the benefit of the
            // doubt for one lag period.
            st.followers = isr
                .iter()
                .filter(|r| **r != self.me)
                .map(|r| (*r, FollowerProgress::new(now)))
                .collect();
        }
        if st.isr != isr {
            st.isr_proposed_at = None;
        }
        st.role = role;
        st.leader_epoch = leader_epoch;
        st.isr = isr.to_vec();
        st.replicas = replicas.to_vec();
        // A replica that left the replica set (a reassignment completed without a new
        // leader epoch) must not come back with the progress it had then: it would
        // rejoin the ISR at once, holding nothing.
        st.followers.retain(|r, _| replicas.contains(r));
        match role {
            Role::Leader => {
                let leo = self.log.lock().log_end_offset();
                self.update_hw(&st, leo);
            }
            _ => {
                let leo = self.log.lock().log_end_offset();
                self.high_watermark.send_modify(|hw| *hw = (*hw).min(leo));
            }
        }
        if changed {
            // Wake acks=all waiters and long polls so they re-check the role.
            self.high_watermark.send_modify(|_| {});
        }
        drop(st);
        // The new epoch's checkpoint entry, fsynced without the locks.
        if let Err(e) = self.sync_if_wanted(now) {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot fsync the leader epoch checkpoint");
        }
    }

    /// Recomputes the leader's high watermark: the smallest log end offset in the
    /// ISR. It never moves backwards. Must be called without the log lock held.
    fn update_hw(&self, st: &ReplicaState, leader_leo: i64) {
        if st.role != Role::Leader {
            return;
        }
        let mut hw = leader_leo;
        for r in &st.isr {
            if *r == self.me {
                continue;
            }
            match st.followers.get(r) {
                Some(p) if p.leo >= 0 => hw = hw.min(p.leo),
                _ => hw = hw.min(*self.high_watermark.borrow()),
            }
        }
        self.high_watermark.send_if_modified(|cur| {
            if hw > *cur {
                *cur = hw;
                true
            } else {
                false
            }
        });
    }

    /// See [`PartitionLog::append_stays_in_memory`].
    pub fn append_stays_in_memory(&self, bytes: u64, now_ms: i64) -> bool {
        self.log.lock().append_stays_in_memory(bytes, now_ms)
    }

    /// Checks that this replica may accept produce requests needing `min_isr` in-sync
    /// replicas (`acks=all`) or none (`min_isr` = 0).
    pub fn check_leader(&self, min_isr: usize) -> Result<(), ResponseError> {
        let st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if st.isr.len() < min_isr {
            return Err(ResponseError::NotEnoughReplicas);
        }
        Ok(())
    }

    /// Appends records as the leader; blocking file I/O happens under a lock that is
    /// never held across an await.
    pub fn append(&self, records: ValidatedRecords, now_ms: i64) -> Result<AppendInfo, LogError> {
        let st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(LogError::NotLeader);
        }
        let (info, leo, sync) = {
            let mut log = self.log.lock();
            let info = log.append(records, st.leader_epoch, now_ms)?;
            (info, log.log_end_offset(), log.sync_wanted())
        };
        self.update_hw(&st, leo);
        self.appended.appended(self.me, &st.replicas);
        drop(st);
        // Asked under the lock already taken: the common append locks the log once.
        if sync {
            self.sync(now_ms, false)?;
        }
        Ok(info)
    }

    /// Waits until the high watermark reaches `offset`, in the current leader epoch,
    /// with no minimum ISR (internal writes that only need the ISR to have them).
    pub async fn wait_for_hw(&self, offset: i64, timeout: Duration) -> Result<(), ResponseError> {
        self.wait_for_replication(offset, self.leader_epoch(), 0, timeout)
            .await
    }

    /// The acks=all wait: until the high watermark reaches `offset`, appended in
    /// `epoch`. Fails fast when leadership is lost or changed since the append (a
    /// new leader may truncate the records), and answers
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR that let the high watermark
    /// pass is smaller than `min_isr`: an ISR shrunk to the leader alone moves the
    /// high watermark to the log end, and such a write has only one copy.
    pub async fn wait_for_replication(
        &self,
        offset: i64,
        epoch: i32,
        min_isr: usize,
        timeout: Duration,
    ) -> Result<(), ResponseError> {
        let mut rx = self.high_watermark.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if let Some(outcome) = self.replication_outcome(offset, epoch, min_isr) {
                    return outcome;
                }
                if rx.changed().await.is_err() {
                    return Err(ResponseError::NotLeaderOrFollower);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(ResponseError::RequestTimedOut))
    }

    /// How an acks=all write of everything below `offset`, appended in `epoch`, stands
    /// now: `None` while it waits for the high watermark; an error once leadership
    /// moved on (the records may be truncated away) or when the ISR that replicated it
    /// is smaller than `min_isr`.
    pub fn replication_outcome(
        &self,
        offset: i64,
        epoch: i32,
        min_isr: usize,
    ) -> Option<Result<(), ResponseError>> {
        // The high watermark moves under the replica lock, so the ISR read here is
        // the one it was computed from.
        let st = self.replica.lock();
        if st.role != Role::Leader || st.leader_epoch != epoch {
            return Some(Err(ResponseError::NotLeaderOrFollower));
        }
        if self.high_watermark() < offset {
            return None;
        }
        Some(if st.isr.len() >= min_isr {
            Ok(())
        } else {
            Err(ResponseError::NotEnoughReplicasAfterAppend)
        })
    }

    /// Plans a consumer read of committed data (below the high watermark).
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<FetchSnapshot, LogError> {
        self.fetch_with(
            offset,
            max_bytes,
            min_one,
            ReadMode::Blocking,
            Isolation::ReadUncommitted,
        )
    }

    /// [`Partition::fetch`]; in `Cached` mode an I/O error of kind `WouldBlock`
    /// ([`LogError::would_block`]) instead of waiting for the disk.
    pub fn fetch_with(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        mode: ReadMode,
        isolation: Isolation,
    ) -> Result<FetchSnapshot, LogError> {
        let hw = self.high_watermark();
        let mut log = self.log.lock();
        let lso = log.last_stable_offset(hw);
        let (limit, aborted) = match isolation {
            Isolation::ReadUncommitted => (hw, Vec::new()),
            Isolation::ReadCommitted => (lso, log.aborted_transactions(offset, lso)),
        };
        let plan = log
            .plan_read_with(offset, max_bytes, min_one, mode)?
            .limit(limit);
        Ok(FetchSnapshot {
            plan,
            high_watermark: hw,
            last_stable_offset: lso,
            log_start_offset: log.log_start_offset(),
            aborted,
        })
    }

    /// The last stable offset: below it every transaction is decided.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log.lock().last_stable_offset(hw)
    }

    /// Aborted transactions with records in `[from, to)`.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.log.lock().aborted_transactions(from, to)
    }

    /// Open transactions on this partition: `(producer id, epoch, first offset)`.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.log.lock().open_transactions()
    }

    /// Runs `f` over the producer state (DescribeProducers).
    pub fn with_producers<T>(
        &self,
        f: impl FnOnce(&crate::producer::ProducerStateTable) -> T,
    ) -> T {
        f(self.log.lock().producers())
    }

    /// Plans a read of everything in the local log, committed or not (rebuilding the
    /// coordinator's state when this broker becomes leader).
    pub fn fetch_local(&self, offset: i64, max_bytes: usize) -> Result<ReadPlan, LogError> {
        self.log.lock().plan_read(offset, max_bytes, true)
    }

    /// Reads every batch of the local log, committed or not, from its start to its
    /// end, calling `f` with each one and `after_chunk` after each read (a
    /// coordinator replaying its internal partition; tests pause there).
    pub fn replay_local(
        &self,
        mut f: impl FnMut(crate::log::batch::BatchHeader, bytes::Bytes),
        after_chunk: &dyn Fn(),
    ) -> anyhow::Result<()> {
        let mut offset = self.log_start_offset();
        loop {
            let data = self.fetch_local(offset, 1 << 20)?.read()?;
            if data.is_empty() {
                return Ok(());
            }
            let mut last = offset;
            for (h, one) in crate::log::records::split_stored(&data) {
                last = h.last_offset();
                f(h, one);
            }
            offset = last + 1;
            after_chunk();
        }
    }

    /// Subscribes to high watermark changes (for long-poll fetches).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().offset_for_timestamp(ts)
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().max_timestamp_offset()
    }

    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.log.lock().apply_retention(now_ms)
    }

    /// Installs the producer state as of `offset`, where the log now starts
    /// ([`PartitionLog::install_producer_snapshot`]).
    pub fn install_producer_snapshot(
        &self,
        offset: i64,
        table: crate::producer::ProducerStateTable,
    ) -> Result<bool, LogError> {
        self.log.lock().install_producer_snapshot(offset, table)
    }

    /// Forgets producers idle for `expiration_ms`; returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.log.lock().expire_producers(now_ms, expiration_ms)
    }

    /// How far the tier's committed copy reaches (bounds local deletion).
    pub fn set_remote_end_offset(&self, end: i64) {
        self.log.lock().set_remote_end_offset(end)
    }

    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        self.log.lock().closed_segments()
    }

    pub fn dir(&self) -> std::path::PathBuf {
        self.log.lock().dir().to_path_buf()
    }

    pub fn segment_count(&self) -> usize {
        self.log.lock().segment_count()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().size_bytes()
    }

    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.log.lock().close(now_ms)
    }
}

/// The log cleaner's view of a hosted partition: it plans against the partition's
/// high watermark (so never past the last stable offset) and swaps under its lock.
impl crate::log::cleaner::service::CleanableLog for Partition {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> i32 {
        self.index
    }

    fn cleaning_plan(
        &self,
        first_dirty: i64,
        now_ms: i64,
    ) -> Option<crate::log::cleaner::CleanPlan> {
        let hw = self.high_watermark();
        self.log.lock().cleaning_plan(hw, first_dirty, now_ms)
    }

    fn install_cleaned(
        &self,
        cleaned: Vec<crate::log::cleaner::Cleaned>,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        self.log.lock().install_cleaned(cleaned, now_ms)
    }
}

mod delete_records;
mod durability;
mod follower;
mod leader;
#[cfg(test)]
mod tests;

pub use follower::FetchPosition;
use leader::FollowerProgress;
pub use leader::{FollowerFetch, FollowerRead};
