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
    AppendInfo, ClosedSegment, LogConfig, LogError, PartitionLog, ReadMode, ReadPlan,
    ValidatedRecords,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not serving yet (metadata not applied) or no longer a replica.
    None,
    Leader,
    Follower {
        leader: i32,
    },
}

#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The follower's log end offset, as its last fetch offset tells.
    leo: i64,
    /// When the follower was last caught up (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: i64,
    /// The leader's log end offset when the follower's previous fetch was served,
    /// and when that was: a fetch that reaches it shows the follower was caught up
    /// at that time, although the leader appended more since.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

impl FollowerProgress {
    /// A replica with no fetch seen yet; `caught_up_ms` is the benefit of the doubt
    /// it gets (an ISR member at a leader change) or 0.
    fn new(caught_up_ms: i64) -> Self {
        FollowerProgress {
            leo: -1,
            last_caught_up_ms: caught_up_ms,
            last_fetch_leader_leo: i64::MAX,
            last_fetch_ms: caught_up_ms,
        }
    }

    /// Records a fetch at `fetch_offset` served when the leader's log ended at
    /// `leader_leo`. Kafka's rule: the follower is caught up now if it reached the
    /// log end, and was caught up at its previous fetch if it reached the log end
    /// the leader had then. Under continuous appends a follower never reaches the
    /// *current* end, so comparing only with it drops healthy followers from the ISR.
    fn fetched(&mut self, fetch_offset: i64, leader_leo: i64, now: i64) {
        self.leo = fetch_offset;
        if fetch_offset >= leader_leo {
            self.last_caught_up_ms = now;
        } else if fetch_offset >= self.last_fetch_leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.last_fetch_leader_leo = leader_leo;
        self.last_fetch_ms = now;
    }
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
    /// Bumped on every append here; follower fetches long-poll on it.
    appended: Arc<watch::Sender<u64>>,
}

/// What a fetch gets back from one partition.
#[derive(Debug)]
pub struct FetchSnapshot {
    pub plan: ReadPlan,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What the leader answers a follower's fetch for one partition.
#[derive(Debug)]
pub enum FollowerRead {
    Data(FetchSnapshot),
    /// The follower's log diverges: truncate to where `epoch` ends here.
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
}

/// What a follower asks of one partition in a replica fetch.
#[derive(Debug, Clone, Copy)]
pub struct FollowerFetch {
    pub replica: i32,
    /// The leader epoch the follower believes in.
    pub epoch: i32,
    pub fetch_offset: i64,
    /// The epoch of the follower's last batch (-1: none), to detect divergence.
    pub last_fetched_epoch: i32,
    pub max_bytes: usize,
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        me: i32,
        appended: Arc<watch::Sender<u64>>,
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
        let (appended, _) = watch::channel(0);
        let p = Partition::new(topic, index, log, 0, Arc::new(appended));
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
    /// ISR. It never moves backwards. Once it passes a pending checkpoint, the
    /// segments that checkpoint replaces are deleted; returns how many.
    /// Must be called without the log lock held.
    fn update_hw(&self, st: &ReplicaState, leader_leo: i64) -> usize {
        if st.role != Role::Leader {
            return 0;
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
        let hw = self.high_watermark();
        let mut log = self.log.lock();
        match log.apply_committed_replacement(hw) {
            Ok(0) => 0,
            Ok(n) => {
                tracing::info!(topic = %self.topic, partition = self.index, hw,
                    start = log.log_start_offset(), segments = n,
                    "checkpoint replicated; deleted the segments it replaces");
                n
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                    "cannot delete the segments a checkpoint replaces");
                0
            }
        }
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
        let (info, leo) = {
            let mut log = self.log.lock();
            let info = log.append(records, st.leader_epoch, now_ms)?;
            (info, log.log_end_offset())
        };
        self.update_hw(&st, leo);
        drop(st);
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        self.sync_if_wanted(now_ms)?;
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

    /// Checks that this replica still follows `leader` in `epoch` (a fetch response
    /// may arrive after the role changed; applying it then would corrupt the log).
    fn still_following(st: &ReplicaState, leader: i32, epoch: i32) -> Result<(), LogError> {
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
        let (n, leo) = {
            let mut log = self.log.lock();
            let n = log.append_replicated(records, now_ms)?;
            (n, log.log_end_offset())
        };
        drop(st);
        self.follower_hw(leader_hw, leo);
        self.sync_if_wanted(now_ms)?;
        Ok(n)
    }

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
    fn sync_if_wanted(&self, now_ms: i64) -> Result<(), LogError> {
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
                log.sync_wanted() || log.has_unsynced_segments(),
            )
        };
        if !active && !wanted {
            return Ok(false);
        }
        self.sync(now_ms, active)?;
        Ok(true)
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

    fn truncate_locked(&self, offset: i64) -> Result<(), LogError> {
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
        self.log.lock().reset_to(offset, now_ms)?;
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

    /// The leader's side of a follower fetch: fences stale epochs, detects a divergent
    /// follower log, records the follower's progress and plans the read.
    pub fn serve_follower(
        &self,
        replica: i32,
        epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
        now: i64,
    ) -> Result<FollowerRead, ResponseError> {
        let read = FollowerFetch {
            replica,
            epoch,
            fetch_offset,
            last_fetched_epoch,
            max_bytes,
        };
        self.serve_follower_with(read, now, ReadMode::Blocking)?
            .ok_or(ResponseError::KafkaStorageError)
    }

    /// [`Partition::serve_follower`]; in `Cached` mode `None`, with nothing recorded,
    /// when planning the read needs bytes the page cache does not hold.
    pub fn serve_follower_with(
        &self,
        read: FollowerFetch,
        now: i64,
        mode: ReadMode,
    ) -> Result<Option<FollowerRead>, ResponseError> {
        let FollowerFetch {
            replica,
            epoch,
            fetch_offset,
            last_fetched_epoch,
            max_bytes,
        } = read;
        let mut st = self.replica.lock();
        if st.role != Role::Leader {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if epoch < st.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if epoch > st.leader_epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
        if !st.replicas.contains(&replica) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let log = self.log.lock();
        let leo = log.log_end_offset();
        if last_fetched_epoch >= 0 {
            let (e, end) = log.epochs().end_offset_for(last_fetched_epoch, leo);
            if e >= 0 && (e != last_fetched_epoch || end < fetch_offset) {
                return Ok(Some(FollowerRead::Diverging {
                    epoch: e,
                    end_offset: end,
                }));
            }
        }
        if fetch_offset > leo || fetch_offset < log.log_start_offset() {
            return Err(ResponseError::OffsetOutOfRange);
        }
        let plan = match log.plan_read_with(fetch_offset, max_bytes, true, mode) {
            Ok(plan) => plan,
            Err(e) if e.would_block() => return Ok(None),
            Err(e) => return Err(crate::kafka::log_error_code(&e)),
        };
        let log_start = log.log_start_offset();
        drop(log);
        st.followers
            .entry(replica)
            .or_insert(FollowerProgress::new(0))
            .fetched(fetch_offset, leo, now);
        self.update_hw(&st, leo);
        Ok(Some(FollowerRead::Data(FetchSnapshot {
            plan,
            high_watermark: self.high_watermark(),
            log_start_offset: log_start,
        })))
    }

    /// On the leader: the ISR this partition should have now (followers lagging more
    /// than `lag_max_ms` leave, caught-up replicas join), when it differs from the
    /// current one and no change is in flight. Marks the change as proposed.
    pub fn isr_change(&self, now: i64, lag_max_ms: i64) -> Option<(i32, Vec<i32>)> {
        let mut st = self.replica.lock();
        if st.role != Role::Leader {
            return None;
        }
        if st.isr_proposed_at.is_some_and(|t| now - t < 5_000) {
            return None;
        }
        let hw = self.high_watermark();
        let epoch_start = self
            .log
            .lock()
            .epochs()
            .start_of(st.leader_epoch)
            .unwrap_or(0);
        let mut isr: Vec<i32> = Vec::new();
        for r in &st.replicas {
            if *r == self.me {
                isr.push(*r);
                continue;
            }
            let p = st.followers.get(r);
            let in_isr = st.isr.contains(r);
            let keep = if in_isr {
                p.is_some_and(|p| now - p.last_caught_up_ms <= lag_max_ms)
            } else {
                p.is_some_and(|p| {
                    p.leo >= hw && p.leo >= epoch_start && now - p.last_caught_up_ms <= lag_max_ms
                })
            };
            if keep {
                isr.push(*r);
            }
        }
        let mut current = st.isr.clone();
        current.sort_unstable();
        let mut desired = isr.clone();
        desired.sort_unstable();
        if current == desired {
            return None;
        }
        st.isr_proposed_at = Some(now);
        Some((st.leader_epoch, isr))
    }

    /// Plans a consumer read of committed data (below the high watermark).
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<FetchSnapshot, LogError> {
        self.fetch_with(offset, max_bytes, min_one, ReadMode::Blocking)
    }

    /// [`Partition::fetch`]; in `Cached` mode an I/O error of kind `WouldBlock`
    /// ([`LogError::would_block`]) instead of waiting for the disk.
    pub fn fetch_with(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        mode: ReadMode,
    ) -> Result<FetchSnapshot, LogError> {
        let hw = self.high_watermark();
        let log = self.log.lock();
        let plan = log
            .plan_read_with(offset, max_bytes, min_one, mode)?
            .limit(hw);
        Ok(FetchSnapshot {
            plan,
            high_watermark: hw,
            log_start_offset: log.log_start_offset(),
        })
    }

    /// Plans a read of everything in the local log, committed or not (rebuilding the
    /// coordinator's state when this broker becomes leader).
    pub fn fetch_local(&self, offset: i64, max_bytes: usize) -> Result<ReadPlan, LogError> {
        self.log.lock().plan_read(offset, max_bytes, true)
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

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().size_bytes()
    }

    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.log.lock().close(now_ms)
    }
}

#[cfg(test)]
mod tests;
