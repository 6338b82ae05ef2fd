//! The group coordinator: owns every group's state machine and the committed-offset
//! cache, writes commits to `__consumer_offsets`, replays an offsets partition when it
//! starts leading it, and runs the timers (session expiry, rebalance deadlines, offset
//! retention). It coordinates the groups whose offsets
//! partition this broker leads.
//!
//! All of that state sits behind one lock ([`CoordinatorState`]), so there is no lock
//! order to get wrong. Two rules keep that lock short and safe: a group's own mutex is
//! only ever taken inside it (handlers lock a group after releasing it, never the
//! other way round), and nothing awaits or replays a partition while holding it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, MutexGuard};
use tracing::{info, warn};

use super::offsets::{
    self, CommittedOffset, OffsetCache, OffsetChange, PendingTxnOffsets, OFFSETS_TOPIC,
};
use super::state::{Group, GroupConfig, GroupState};
use crate::log::ValidatedRecords;
use crate::partition::Partition;
use crate::replicas::ReplicaManager;

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    pub offsets_partitions: i32,
    /// Offsets of groups without members expire this long after their last commit.
    pub offsets_retention_ms: i64,
    /// Largest `committed_metadata` accepted (OFFSET_METADATA_TOO_LARGE above).
    pub max_metadata_bytes: usize,
}

/// Lag of one partition for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub end_offset: i64,
    pub lag: i64,
}

/// How long a commit may wait for the ISR of its offsets partition (acks=all).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct GroupCoordinator {
    pub config: CoordinatorConfig,
    /// Shared with the blocking-pool task that appends a commit.
    state: Arc<Mutex<CoordinatorState>>,
}

/// Groups, committed offsets and the offsets partitions led here: one owner, one lock.
#[derive(Default)]
struct CoordinatorState {
    groups: HashMap<String, Arc<Mutex<Group>>>,
    /// Durable commits only (below the high watermark): what a failover keeps.
    offsets: OffsetCache,
    /// `__consumer_offsets` partitions this broker leads and has loaded, hence
    /// coordinates.
    owned: HashMap<i32, OwnedPartition>,
}

struct OwnedPartition {
    partition: Arc<Partition>,
    /// The leader epoch it was loaded in: records of another epoch may have been
    /// truncated, so a new epoch means a reload.
    leader_epoch: i32,
    /// Changes appended in that epoch and not yet below the high watermark, in log
    /// order (appends happen under the coordinator lock, so this is the log order;
    /// a transaction's commits join it at their marker's place).
    pending: VecDeque<Pending>,
    /// Transactional commits (TxnOffsetCommit) whose marker is not written yet.
    txn_pending: PendingTxnOffsets,
}

struct Pending {
    /// One past the offset of its last record.
    end: i64,
    changes: Vec<OffsetChange>,
}

/// A change appended to `__consumer_offsets`, not yet known to be replicated.
struct Appended {
    partition: Arc<Partition>,
    end: i64,
    leader_epoch: i32,
}

/// A summary row for ListGroups.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

impl CoordinatorState {
    /// Moves pending changes the high watermark has passed into the cache, in log
    /// order, so a reader never sees a commit a failover could lose.
    fn settle(&mut self) {
        let CoordinatorState { offsets, owned, .. } = self;
        for o in owned.values_mut() {
            if o.pending.is_empty() {
                continue;
            }
            // The high watermark first: if the epoch still matches afterwards, it was
            // this leadership's high watermark, which only counts our own records.
            let hw = o.partition.high_watermark();
            if !o.partition.is_leader() || o.partition.leader_epoch() != o.leader_epoch {
                // Leadership moved; the reload that follows sees whatever survived.
                continue;
            }
            while o.pending.front().is_some_and(|p| p.end <= hw) {
                if let Some(p) = o.pending.pop_front() {
                    offsets.apply(p.changes);
                }
            }
        }
    }

    /// What the log of offsets partition `index` holds: the durable entries with the
    /// pending changes on top. A checkpoint must keep all of it, or it would delete
    /// the only copy of a commit still waiting for its replicas.
    fn logged(&self, index: i32, partitions: i32) -> OffsetCache {
        let mut view = OffsetCache::default();
        view.apply(self.offsets.entries_for_partition(index, partitions));
        if let Some(o) = self.owned.get(&index) {
            for p in &o.pending {
                view.apply(p.changes.iter().cloned());
            }
        }
        view
    }

    /// Forgets the groups and offsets of partitions no longer coordinated here.
    fn forget(&mut self, lost: &[i32], partitions: i32) {
        for p in lost {
            self.offsets.drop_partition(*p, partitions);
            self.owned.remove(p);
        }
        self.groups
            .retain(|g, _| !lost.contains(&offsets::partition_for(g, partitions)));
    }
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        GroupCoordinator {
            config,
            state: Arc::new(Mutex::new(CoordinatorState::default())),
        }
    }

    /// The state with every change the high watermark has passed made visible.
    fn settled(&self) -> MutexGuard<'_, CoordinatorState> {
        let mut st = self.state.lock();
        st.settle();
        st
    }

    fn partition_of(&self, group: &str) -> i32 {
        offsets::partition_for(group, self.config.offsets_partitions)
    }

    /// Whether this broker coordinates `group` (leads and has loaded its offsets
    /// partition).
    pub fn is_coordinator(&self, group: &str) -> bool {
        let p = self.partition_of(group);
        self.state.lock().owned.contains_key(&p)
    }

    /// Follows `__consumer_offsets` leadership: loads the partitions this broker now
    /// leads, forgets the groups of partitions it no longer leads.
    pub fn set_owned(&self, replicas: &ReplicaManager, led: &HashSet<i32>) {
        let topic = replicas.topic(OFFSETS_TOPIC);
        let led: HashMap<i32, Arc<Partition>> = led
            .iter()
            .filter_map(|i| Some((*i, Arc::clone(topic.as_ref()?.partition(*i)?))))
            .collect();
        self.follow_leadership(&led, &|| {});
    }

    /// [`set_owned`](Self::set_owned) over the led replicas themselves; `on_batch` runs
    /// during each replay (tests pause there).
    fn follow_leadership(&self, led: &HashMap<i32, Arc<Partition>>, on_batch: &dyn Fn()) {
        let n = self.config.offsets_partitions;
        let gained: Vec<(i32, Arc<Partition>)> = {
            let mut st = self.state.lock();
            let owned = st
                .owned
                .iter()
                .map(|(i, o)| (*i, Arc::clone(&o.partition), o.leader_epoch));
            let (lost, gained) = crate::replicas::leadership_delta(owned, led);
            if !lost.is_empty() {
                st.forget(&lost, n);
                info!(partitions = ?lost, "no longer coordinating groups of these offsets partitions");
            }
            gained
        };
        // Not owned yet, so nothing appends to these partitions while they replay.
        for (index, p) in gained {
            let epoch = p.leader_epoch();
            let (loaded, open_txns, records) = match offsets::replay(&p, on_batch) {
                Ok(r) => r,
                Err(e) => {
                    warn!(partition = index, error = %e, "cannot load offsets partition");
                    continue;
                }
            };
            let mut st = self.state.lock();
            if !p.is_leader() || p.leader_epoch() != epoch {
                // The replayed log may already be truncated; the next reconcile retries.
                warn!(
                    partition = index,
                    "offsets partition changed leadership while loading"
                );
                continue;
            }
            st.offsets.install(loaded);
            st.owned.insert(
                index,
                OwnedPartition {
                    partition: p,
                    leader_epoch: epoch,
                    pending: VecDeque::new(),
                    txn_pending: open_txns,
                },
            );
            info!(
                partition = index,
                records, "coordinating the groups of offsets partition"
            );
        }
    }

    pub fn group(&self, id: &str) -> Option<Arc<Mutex<Group>>> {
        self.state.lock().groups.get(id).cloned()
    }

    pub fn group_or_create(&self, id: &str) -> Arc<Mutex<Group>> {
        let mut st = self.state.lock();
        Arc::clone(
            st.groups
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(Group::new(id, self.config.group)))),
        )
    }

    /// Appends offset changes for one group and waits until they are replicated to
    /// the ISR of the offsets partition (acks=all); only then does the cache show
    /// them, so a failover never takes back a commit a client has seen.
    pub async fn write_durable(
        &self,
        group: &str,
        changes: Vec<OffsetChange>,
        now: i64,
    ) -> Result<(), ResponseError> {
        self.write_replicated(group, changes, now, None).await
    }

    /// Appends changes (inside `txn`'s transaction, if given) on the blocking pool,
    /// off the async runtime, and waits until the ISR has them.
    async fn write_replicated(
        &self,
        group: &str,
        changes: Vec<OffsetChange>,
        now: i64,
        txn: Option<(i64, i16)>,
    ) -> Result<(), ResponseError> {
        if changes.is_empty() {
            return Ok(());
        }
        let state = Arc::clone(&self.state);
        let index = self.partition_of(group);
        let group = group.to_string();
        let appended =
            crate::blocking::run(move || append_to_log(&state, index, &group, changes, now, txn))
                .await
                .ok_or(ResponseError::CoordinatorNotAvailable)??;
        match appended {
            Some(a) => self.await_durable(a, COMMIT_TIMEOUT).await,
            None => Ok(()),
        }
    }

    /// Appends offset changes for one group, on the calling thread; nobody waits
    /// for them to be replicated.
    fn append_changes(
        &self,
        group: &str,
        changes: Vec<OffsetChange>,
        now: i64,
    ) -> Result<Option<Appended>, ResponseError> {
        append_to_log(
            &self.state,
            self.partition_of(group),
            group,
            changes,
            now,
            None,
        )
    }

    /// TxnOffsetCommit: appends the commits inside the producer's transaction and
    /// waits until they are replicated; they take effect when the commit marker is
    /// written ([`GroupCoordinator::complete_txn`]) and vanish on an abort.
    pub async fn write_txn_offsets(
        &self,
        group: &str,
        producer: (i64, i16),
        changes: Vec<OffsetChange>,
        now: i64,
    ) -> Result<(), ResponseError> {
        self.write_replicated(group, changes, now, Some(producer))
            .await
    }

    /// A transaction marker of `producer_id` was written (and replicated) to offsets
    /// partition `index`, ending at `marker_end`: its transactional commits take
    /// effect (commit) or are dropped (abort).
    pub fn complete_txn(&self, index: i32, producer_id: i64, commit: bool, marker_end: i64) {
        let mut st = self.state.lock();
        let Some(o) = st.owned.get_mut(&index) else {
            return;
        };
        let Some(changes) = o.txn_pending.remove(&producer_id) else {
            return;
        };
        if commit {
            // In log order among the other commits, which may be newer or older.
            let at = o.pending.partition_point(|p| p.end <= marker_end);
            o.pending.insert(
                at,
                Pending {
                    end: marker_end,
                    changes,
                },
            );
        }
        st.settle();
    }

    /// Whether a transaction has a commit for this partition of the group that its
    /// marker has not decided yet (OffsetFetch with `require_stable`).
    pub fn has_unstable_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let index = self.partition_of(group);
        let st = self.state.lock();
        st.owned.get(&index).is_some_and(|o| {
            o.txn_pending
                .values()
                .flatten()
                .any(|(g, t, p, _)| g == group && t == topic && *p == partition)
        })
    }

    async fn await_durable(&self, a: Appended, timeout: Duration) -> Result<(), ResponseError> {
        a.partition
            .wait_for_hw(a.end, timeout)
            .await
            // The codes a consumer retries on after finding the coordinator again.
            .map_err(|e| match e {
                ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
                _ => ResponseError::NotCoordinator,
            })?;
        // The wait reads the epoch itself when it starts; epochs only grow, so an
        // unchanged epoch now means it waited for the epoch the records went into,
        // not for a later leader's high watermark over a truncated log.
        if a.partition.leader_epoch() != a.leader_epoch {
            return Err(ResponseError::NotCoordinator);
        }
        drop(self.settled());
        Ok(())
    }

    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.settled().offsets.get(group, topic, partition).cloned()
    }

    pub fn group_offsets(&self, group: &str) -> BTreeMap<(String, i32), CommittedOffset> {
        self.settled()
            .offsets
            .group(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Every group with members or committed offsets.
    pub fn list(&self) -> Vec<GroupListing> {
        let st = self.settled();
        let mut out: BTreeMap<String, GroupListing> = BTreeMap::new();
        for (id, g) in st.groups.iter() {
            let g = g.lock();
            if g.state() == GroupState::Dead {
                continue;
            }
            out.insert(
                id.clone(),
                GroupListing {
                    group_id: id.clone(),
                    protocol_type: g.protocol_type().unwrap_or("").to_string(),
                    state: g.state(),
                },
            );
        }
        for id in st.offsets.group_ids() {
            out.entry(id.clone()).or_insert_with(|| GroupListing {
                group_id: id.clone(),
                protocol_type: "consumer".into(),
                state: GroupState::Empty,
            });
        }
        out.into_values().collect()
    }

    /// Deletes an empty group and its offsets, including commits still in flight.
    pub async fn delete_group(&self, id: &str, now: i64) -> Result<(), ResponseError> {
        let (existing, logged) = {
            let st = self.settled();
            let n = self.config.offsets_partitions;
            let logged: Vec<(String, i32)> = st
                .logged(self.partition_of(id), n)
                .group(id)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            (st.groups.get(id).cloned(), logged)
        };
        if existing.is_none() && logged.is_empty() {
            return Err(ResponseError::GroupIdNotFound);
        }
        if let Some(g) = &existing {
            let mut g = g.lock();
            if !g.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            g.mark_dead();
        }
        let tombstones: Vec<OffsetChange> = logged
            .into_iter()
            .map(|(t, p)| (id.to_string(), t, p, None))
            .collect();
        self.write_durable(id, tombstones, now).await?;
        self.state.lock().groups.remove(id);
        info!(group = id, "deleted group");
        Ok(())
    }

    /// Runs group timers; cheap enough for every 100 ms.
    pub fn tick(&self, now: i64) {
        let groups: Vec<Arc<Mutex<Group>>> = self.state.lock().groups.values().cloned().collect();
        for g in groups {
            let mut g = g.lock();
            let expired = g.tick(now);
            for m in expired {
                info!(group = %g.id, member = %m, "member session expired");
            }
        }
    }

    /// Expires old offsets of groups without members (their tombstones are what the
    /// log cleaner then removes from `__consumer_offsets`).
    pub fn maintain(&self, now: i64) {
        let cutoff = now - self.config.offsets_retention_ms;
        let expired = {
            let st = self.settled();
            // A commit in flight is newer than anything the cache says about its key.
            let in_flight: HashSet<(&str, &str, i32)> = st
                .owned
                .values()
                .flat_map(|o| o.pending.iter().flat_map(|p| p.changes.iter()))
                .map(|(g, t, p, _)| (g.as_str(), t.as_str(), *p))
                .collect();
            st.offsets
                .expired(cutoff, |g| {
                    st.groups.get(g).is_none_or(|g| g.lock().is_empty())
                })
                .into_iter()
                .filter(|(g, t, p, _)| !in_flight.contains(&(g.as_str(), t.as_str(), *p)))
                .collect::<Vec<_>>()
        };
        let mut by_group: HashMap<String, Vec<OffsetChange>> = HashMap::new();
        for c in expired {
            by_group.entry(c.0.clone()).or_default().push(c);
        }
        for (g, changes) in by_group {
            info!(group = %g, partitions = changes.len(), "expiring committed offsets of an empty group");
            // The tombstones take effect as their replicas catch up; nobody waits.
            if let Err(e) = self.append_changes(&g, changes, now) {
                warn!(group = %g, error = ?e, "offset expiry failed");
            }
        }
    }

    /// Lag of every partition the group has committed offsets for.
    pub fn lag(&self, replicas: &ReplicaManager, group: &str) -> Vec<PartitionLag> {
        self.group_offsets(group)
            .into_iter()
            .filter_map(|((topic, partition), c)| {
                let end = replicas
                    .topic(&topic)?
                    .partition(partition)?
                    .high_watermark();
                Some(PartitionLag {
                    topic,
                    partition,
                    committed: c.offset,
                    end_offset: end,
                    lag: (end - c.offset).max(0),
                })
            })
            .collect()
    }

    /// Group ids known to the coordinator (members or offsets).
    pub fn group_ids(&self) -> Vec<String> {
        self.list().into_iter().map(|l| l.group_id).collect()
    }
}

/// Appends offset changes for `group` to its offsets partition `index`; they
/// become visible once the high watermark passes them.
fn append_to_log(
    state: &Mutex<CoordinatorState>,
    index: i32,
    group: &str,
    changes: Vec<OffsetChange>,
    now: i64,
    txn: Option<(i64, i16)>,
) -> Result<Option<Appended>, ResponseError> {
    if changes.is_empty() {
        return Ok(None);
    }
    let raw = offsets::encode_changes(&changes, now, txn).map_err(|e| {
        warn!(error = %e, "cannot encode offset commit");
        ResponseError::UnknownServerError
    })?;
    let records =
        ValidatedRecords::new(&raw, usize::MAX).map_err(|_| ResponseError::UnknownServerError)?;
    // Appending under the lock keeps `pending` in log order.
    let mut st = state.lock();
    let o = st
        .owned
        .get_mut(&index)
        .filter(|o| o.partition.leader_epoch() == o.leader_epoch)
        .ok_or(ResponseError::NotCoordinator)?;
    let info = o.partition.append(records, now).map_err(|e| match e {
        crate::log::LogError::NotLeader => ResponseError::NotCoordinator,
        e => {
            warn!(error = %e, group, "cannot write to __consumer_offsets");
            ResponseError::KafkaStorageError
        }
    })?;
    let end = info.last_offset + 1;
    match txn {
        // Held until the transaction's marker decides it.
        Some((producer_id, _)) => o
            .txn_pending
            .entry(producer_id)
            .or_default()
            .extend(changes),
        None => o.pending.push_back(Pending { end, changes }),
    }
    Ok(Some(Appended {
        partition: Arc::clone(&o.partition),
        end,
        leader_epoch: o.leader_epoch,
    }))
}

#[cfg(test)]
mod tests;
