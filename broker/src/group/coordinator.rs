//! The group coordinator: owns every group's state machine and the committed-offset
//! cache, writes commits to `__consumer_offsets`, replays it on startup, and runs the
//! timers (session expiry, rebalance deadlines, offset retention, checkpoint
//! compaction). On a single broker it coordinates every group; the clustered broker
//! will coordinate the groups whose offsets partition it leads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use super::offsets::{self, CommittedOffset, OffsetCache, OffsetChange, OFFSETS_TOPIC};
use super::state::{Group, GroupConfig, GroupState};
use crate::broker::Broker;
use crate::log::ValidatedRecords;
use crate::partition::Partition;

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    pub offsets_partitions: i32,
    /// Offsets of groups without members expire this long after their last commit.
    pub offsets_retention_ms: i64,
    /// Compact an offsets partition once it has this many segments.
    pub compact_after_segments: usize,
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

pub struct GroupCoordinator {
    pub config: CoordinatorConfig,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    cache: RwLock<OffsetCache>,
    /// `__consumer_offsets` partitions this broker leads, hence coordinates.
    owned: Mutex<HashSet<i32>>,
}

/// A summary row for ListGroups.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            cache: RwLock::new(OffsetCache::default()),
            owned: Mutex::new(HashSet::new()),
        }
    }

    /// Whether this broker coordinates `group` (leads its offsets partition).
    pub fn is_coordinator(&self, group: &str) -> bool {
        self.owned.lock().contains(&offsets::partition_for(
            group,
            self.config.offsets_partitions,
        ))
    }

    /// Follows `__consumer_offsets` leadership: loads the partitions this broker now
    /// leads, forgets the groups of partitions it no longer leads.
    pub fn set_owned(&self, broker: &Broker, led: &HashSet<i32>) {
        let n = self.config.offsets_partitions;
        let (gained, lost): (Vec<i32>, Vec<i32>) = {
            let owned = self.owned.lock();
            (
                led.difference(&owned).copied().collect(),
                owned.difference(led).copied().collect(),
            )
        };
        if !lost.is_empty() {
            let mut cache = self.cache.write();
            for p in &lost {
                cache.drop_partition(*p, n);
            }
            self.groups
                .lock()
                .retain(|g, _| !lost.contains(&offsets::partition_for(g, n)));
            info!(partitions = ?lost, "no longer coordinating groups of these offsets partitions");
        }
        let topic = broker.topic(OFFSETS_TOPIC);
        for p in gained {
            let Some(part) = topic.as_ref().and_then(|t| t.partition(p)) else {
                continue;
            };
            match self.load_partition(part) {
                Ok(records) => {
                    self.owned.lock().insert(p);
                    info!(
                        partition = p,
                        records, "coordinating the groups of offsets partition"
                    );
                }
                Err(e) => warn!(partition = p, error = %e, "cannot load offsets partition"),
            }
        }
        self.owned.lock().retain(|p| led.contains(p));
    }

    /// Replays one offsets partition into the cache.
    fn load_partition(&self, p: &Partition) -> anyhow::Result<usize> {
        let mut cache = self.cache.write();
        let mut records = 0usize;
        let mut offset = p.log_start_offset();
        loop {
            let data = p.fetch_local(offset, 1 << 20)?.read()?;
            if data.is_empty() {
                break;
            }
            let mut last = offset;
            for (h, _) in crate::log::batch::headers(&data) {
                last = h.last_offset();
            }
            let changes = offsets::decode_changes(&data);
            records += changes.len();
            cache.apply(changes);
            offset = last + 1;
        }
        Ok(records)
    }

    fn offsets_partition(
        &self,
        broker: &Broker,
        group: &str,
    ) -> Result<Arc<Partition>, ResponseError> {
        let topic = broker
            .topic(OFFSETS_TOPIC)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let n = topic.partitions.len() as i32;
        match topic.partition(offsets::partition_for(group, n)) {
            Some(p) if p.is_leader() => Ok(Arc::clone(p)),
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    pub fn group(&self, id: &str) -> Option<Arc<Mutex<Group>>> {
        self.groups.lock().get(id).cloned()
    }

    pub fn group_or_create(&self, id: &str) -> Arc<Mutex<Group>> {
        let mut groups = self.groups.lock();
        Arc::clone(
            groups
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(Group::new(id, self.config.group)))),
        )
    }

    /// Appends offset changes for one group and applies them to the cache.
    pub fn write(
        &self,
        broker: &Broker,
        group: &str,
        changes: Vec<OffsetChange>,
        now: i64,
    ) -> Result<(), ResponseError> {
        self.append_changes(broker, group, changes, now).map(|_| ())
    }

    /// Like [`write`](Self::write), then waits until the commit is replicated to the
    /// ISR of the offsets partition (acks=all), so a coordinator failover keeps it.
    pub async fn write_durable(
        &self,
        broker: &Broker,
        group: &str,
        changes: Vec<OffsetChange>,
        now: i64,
    ) -> Result<(), ResponseError> {
        if let Some((p, end)) = self.append_changes(broker, group, changes, now)? {
            p.wait_for_hw(end, std::time::Duration::from_secs(10))
                .await?;
        }
        Ok(())
    }

    fn append_changes(
        &self,
        broker: &Broker,
        group: &str,
        changes: Vec<OffsetChange>,
        now: i64,
    ) -> Result<Option<(Arc<Partition>, i64)>, ResponseError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let partition = self.offsets_partition(broker, group)?;
        let raw = offsets::encode_changes(&changes, now).map_err(|e| {
            warn!(error = %e, "cannot encode offset commit");
            ResponseError::UnknownServerError
        })?;
        let records = ValidatedRecords::new(&raw, usize::MAX)
            .map_err(|_| ResponseError::UnknownServerError)?;
        // Holding the cache lock across the append keeps cache order equal to log order.
        let mut cache = self.cache.write();
        let info = partition.append(records, now).map_err(|e| match e {
            crate::log::LogError::NotLeader => ResponseError::NotCoordinator,
            e => {
                warn!(error = %e, group, "cannot write to __consumer_offsets");
                ResponseError::KafkaStorageError
            }
        })?;
        cache.apply(changes);
        Ok(Some((partition, info.last_offset + 1)))
    }

    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.cache.read().get(group, topic, partition).cloned()
    }

    pub fn group_offsets(&self, group: &str) -> BTreeMap<(String, i32), CommittedOffset> {
        self.cache.read().group(group).cloned().unwrap_or_default()
    }

    /// Every group with members or committed offsets.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut out: BTreeMap<String, GroupListing> = BTreeMap::new();
        for (id, g) in self.groups.lock().iter() {
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
        for id in self.cache.read().group_ids() {
            out.entry(id.clone()).or_insert_with(|| GroupListing {
                group_id: id.clone(),
                protocol_type: "consumer".into(),
                state: GroupState::Empty,
            });
        }
        out.into_values().collect()
    }

    /// Deletes an empty group and its offsets.
    pub fn delete_group(&self, broker: &Broker, id: &str, now: i64) -> Result<(), ResponseError> {
        let existing = self.group(id);
        let has_offsets = self.cache.read().group(id).is_some();
        if existing.is_none() && !has_offsets {
            return Err(ResponseError::GroupIdNotFound);
        }
        if let Some(g) = &existing {
            let mut g = g.lock();
            if !g.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            g.mark_dead();
        }
        let tombstones: Vec<OffsetChange> = self
            .group_offsets(id)
            .into_keys()
            .map(|(t, p)| (id.to_string(), t, p, None))
            .collect();
        self.write(broker, id, tombstones, now)?;
        self.groups.lock().remove(id);
        info!(group = id, "deleted group");
        Ok(())
    }

    /// Runs group timers; cheap enough for every 100 ms.
    pub fn tick(&self, now: i64) {
        let groups: Vec<Arc<Mutex<Group>>> = self.groups.lock().values().cloned().collect();
        for g in groups {
            let mut g = g.lock();
            let expired = g.tick(now);
            for m in expired {
                info!(group = %g.id, member = %m, "member session expired");
            }
        }
    }

    /// Expires old offsets of groups without members and compacts offsets partitions
    /// that have grown past the threshold.
    pub fn maintain(&self, broker: &Broker, now: i64) {
        let cutoff = now - self.config.offsets_retention_ms;
        let expired = {
            let groups = self.groups.lock();
            self.cache.read().expired(cutoff, |g| {
                groups.get(g).is_none_or(|st| st.lock().is_empty())
            })
        };
        let mut by_group: HashMap<String, Vec<OffsetChange>> = HashMap::new();
        for c in expired {
            by_group.entry(c.0.clone()).or_default().push(c);
        }
        for (g, changes) in by_group {
            info!(group = %g, partitions = changes.len(), "expiring committed offsets of an empty group");
            if let Err(e) = self.write(broker, &g, changes, now) {
                warn!(group = %g, error = ?e, "offset expiry failed");
            }
        }
        let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
            return;
        };
        let n = topic.partitions.len() as i32;
        for p in topic.local().filter(|p| p.is_leader()) {
            if p.segment_count() < self.config.compact_after_segments {
                continue;
            }
            let cache = self.cache.write();
            let live = cache.entries_for_partition(p.index, n);
            let records = if live.is_empty() {
                None
            } else {
                match offsets::encode_changes(&live, now)
                    .ok()
                    .and_then(|raw| ValidatedRecords::new(&raw, usize::MAX).ok())
                {
                    Some(r) => Some(r),
                    None => continue,
                }
            };
            match p.checkpoint(records, now) {
                Ok(removed) => info!(
                    partition = p.index,
                    live = live.len(),
                    removed,
                    "compacted __consumer_offsets partition"
                ),
                Err(e) => warn!(partition = p.index, error = %e, "offsets compaction failed"),
            }
            drop(cache);
        }
    }

    /// Lag of every partition the group has committed offsets for.
    pub fn lag(&self, broker: &Broker, group: &str) -> Vec<PartitionLag> {
        self.group_offsets(group)
            .into_iter()
            .filter_map(|((topic, partition), c)| {
                let end = broker.topic(&topic)?.partition(partition)?.high_watermark();
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
