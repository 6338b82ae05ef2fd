//! The replica manager: the partitions hosted on this broker. It owns the registry
//! (topics by name and id, each an immutable [`TopicState`] snapshot swapped on
//! change), opens a replica's log when the metadata assigns it here, gives each
//! replica the role the metadata says ([`ReplicaManager::apply`]), takes replicas
//! out of service when they move away or their topic is deleted, and runs the
//! per-replica housekeeping (retention, flushing, clean close). The Kafka handlers,
//! the group coordinator, the tier and the admin API find partitions here.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::dynamic::DynamicValues;
use crate::config::BrokerConfig;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::log::PartitionLog;
use crate::metadata::cluster::{ClusterState, TopicMeta};
use crate::metadata::{topic_config, TopicRecord};
use crate::partition::{Partition, Role};
use crate::replica_removal::{self, RemovedReplica};
use crate::replication::FollowerWakeups;
use crate::txn::TXN_STATE_TOPIC;

#[cfg(test)]
mod tests;

const TOPIC_ID_FILE: &str = "topic-id";

/// Records what a replica's `role` means for [`ReplicaManager::apply`]'s caller: a
/// partition to fetch from its leader, or a coordinator partition led here.
fn note_role(
    role: Role,
    topic: &str,
    index: i32,
    part: &Arc<Partition>,
    followed: &mut HashMap<i32, Vec<Arc<Partition>>>,
    offsets_led: &mut HashSet<i32>,
    txn_state_led: &mut HashSet<i32>,
) {
    match role {
        Role::Follower { leader } => followed.entry(leader).or_default().push(Arc::clone(part)),
        Role::Leader if topic == OFFSETS_TOPIC => {
            offsets_led.insert(index);
        }
        Role::Leader if topic == TXN_STATE_TOPIC => {
            txn_state_led.insert(index);
        }
        _ => {}
    }
}

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

/// A topic and the replicas of its partitions hosted here, as an immutable snapshot;
/// changes swap in a new one.
#[derive(Debug)]
pub struct TopicState {
    pub record: TopicRecord,
    /// Indexed by partition; `None` where this broker holds no replica.
    pub partitions: Vec<Option<Arc<Partition>>>,
}

impl TopicState {
    /// The local replica of partition `index`, whatever its role.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .and_then(Option::as_ref)
    }

    /// Every local replica.
    pub fn local(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().flatten()
    }

    /// The local replica of `index` if it leads the partition; otherwise the Kafka
    /// error a client should see (unknown partition, or not the leader).
    pub fn leader_of(
        &self,
        index: i32,
    ) -> Result<&Arc<Partition>, kafka_protocol::error::ResponseError> {
        use kafka_protocol::error::ResponseError;
        if index < 0 || index >= self.record.partitions {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        match self.partition(index) {
            Some(p) if p.is_leader() => Ok(p),
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }
}

#[derive(Default)]
struct Topics {
    by_name: HashMap<String, Arc<TopicState>>,
    by_id: HashMap<Uuid, Arc<TopicState>>,
    /// The metadata each topic's state was built from, and whether this broker was
    /// registered then: a topic whose metadata is the same `Arc` (untouched since,
    /// see [`ClusterState::topics`]) keeps its state and its replicas' roles.
    built_from: HashMap<String, Arc<TopicMeta>>,
    registered: bool,
}

/// What one [`ReplicaManager::apply`] changed that other services act on.
#[derive(Debug, Default)]
pub struct Applied {
    /// The replicas that follow, by leader broker: the follower fetchers' work.
    pub followed: HashMap<i32, Vec<Arc<Partition>>>,
    /// Replicas taken out of service, whose files are to be deleted.
    pub removed: Vec<RemovedReplica>,
    /// The `__consumer_offsets` partitions led here: the groups coordinated here.
    pub offsets_led: HashSet<i32>,
    /// The `__transaction_state` partitions led here: the transactional ids
    /// coordinated here.
    pub txn_state_led: HashSet<i32>,
}

pub struct ReplicaManager {
    /// The static settings.
    config: BrokerConfig,
    /// The live settings (the static ones overlaid with the dynamic broker configs)
    /// and the dynamic values they were made from.
    live: RwLock<(DynamicValues, Arc<BrokerConfig>)>,
    node_id: i32,
    /// The data directory held a clean-shutdown marker: logs skip tail validation.
    clean_start: bool,
    topics: RwLock<Topics>,
    /// Woken on leader appends, per follower; follower fetches long-poll on it.
    appended: Arc<FollowerWakeups>,
}

impl ReplicaManager {
    pub fn new(config: BrokerConfig, clean_start: bool) -> Self {
        ReplicaManager {
            node_id: config.node_id,
            live: RwLock::new((DynamicValues::default(), Arc::new(config.clone()))),
            config,
            clean_start,
            topics: RwLock::new(Topics::default()),
            appended: Arc::default(),
        }
    }

    /// The live settings: static, overlaid with the dynamic broker configs of the
    /// last applied metadata.
    pub fn live_config(&self) -> Arc<BrokerConfig> {
        Arc::clone(&self.live.read().1)
    }

    /// The dynamic broker configs that apply here, as of the last applied metadata.
    pub fn dynamic_values(&self) -> DynamicValues {
        self.live.read().0.clone()
    }

    /// Takes the dynamic broker configs of `state`; true when they changed.
    fn take_dynamic(&self, state: &ClusterState) -> bool {
        let dynamic = DynamicValues::of(&state.broker_configs, self.node_id);
        if self.live.read().0 == dynamic {
            return false;
        }
        info!(cluster = ?dynamic.cluster, broker = ?dynamic.broker, "dynamic broker configs changed");
        let live = Arc::new(dynamic.overlay(&self.config));
        *self.live.write() = (dynamic, live);
        true
    }

    /// Wakes whenever a leader here appended to a partition `follower` replicates
    /// (the long poll of that follower's fetches).
    pub fn subscribe_appends(&self, follower: i32) -> watch::Receiver<u64> {
        self.appended.subscribe(follower)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.topics.read().by_name.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<TopicState>> {
        self.topics.read().by_id.get(id).cloned()
    }

    /// All topics, sorted by name.
    pub fn all_topics(&self) -> Vec<Arc<TopicState>> {
        let mut v: Vec<_> = self.topics.read().by_name.values().cloned().collect();
        v.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        v
    }

    /// Brings the hosted replicas in line with `state`: opens the logs of partitions
    /// newly assigned here, gives every replica the role the state says, and stops
    /// serving the ones no longer assigned (moving their directories aside; the
    /// caller deletes the files, see [`replica_removal`]). Before this broker is
    /// `registered` nothing is removed and nothing leads. Blocking file I/O: call it
    /// on the blocking pool.
    pub fn apply(&self, state: &ClusterState, registered: bool, now: i64) -> Applied {
        let me = self.node_id;
        let (old, built_from, was_registered) = {
            let t = self.topics.read();
            (t.by_name.clone(), t.built_from.clone(), t.registered)
        };
        let mut next = Topics {
            registered,
            ..Topics::default()
        };
        let mut followed: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        let mut offsets_led: HashSet<i32> = HashSet::new();
        let mut txn_state_led: HashSet<i32> = HashSet::new();
        let mut removed: Vec<RemovedReplica> = Vec::new();
        let defaults_changed = self.take_dynamic(state);
        let live = self.live_config();
        for (name, meta) in &state.topics {
            let prev = old.get(name).filter(|t| t.record.id == meta.record.id);
            if let Some(t) = prev.filter(|_| {
                !defaults_changed
                    && registered == was_registered
                    && built_from.get(name).is_some_and(|b| Arc::ptr_eq(b, meta))
            }) {
                // Unchanged metadata (a heartbeat, another topic's change): the roles
                // stand; only collect what the caller acts on.
                for (index, part) in t.partitions.iter().enumerate() {
                    if let Some(part) = part {
                        let role = part.role();
                        note_role(
                            role,
                            name,
                            index as i32,
                            part,
                            &mut followed,
                            &mut offsets_led,
                            &mut txn_state_led,
                        );
                    }
                }
                next.built_from.insert(name.clone(), Arc::clone(meta));
                next.by_id.insert(meta.record.id, Arc::clone(t));
                next.by_name.insert(name.clone(), Arc::clone(t));
                continue;
            }
            let mut log_config = topic_config::log_config(&meta.record.configs, &live);
            if meta.record.internal && log_config.compaction.is_none() {
                // `__consumer_offsets` / `__transaction_state` created before they were
                // marked compacted: the cleaner keeps them small all the same.
                log_config.compaction = Some(crate::log::cleaner::CompactionConfig::default());
            }
            let configs_changed =
                defaults_changed || prev.is_some_and(|t| t.record.configs != meta.record.configs);
            let topic: Arc<str> = Arc::from(name.as_str());
            let mut partitions = Vec::with_capacity(meta.partitions.len());
            // Every replica assigned here opened: the next reconcile may skip the topic
            // while its metadata stays the same; otherwise it retries the others.
            let mut complete = true;
            for (i, p) in meta.partitions.iter().enumerate() {
                let index = i as i32;
                let existing = prev.and_then(|t| t.partition(index)).cloned();
                if !p.replicas.contains(&me) {
                    if let Some(part) = existing {
                        if registered {
                            removed.push(self.remove_replica(&part, &meta.record.id, now));
                        } else {
                            partitions.push(Some(part));
                            continue;
                        }
                    }
                    partitions.push(None);
                    continue;
                }
                let part = match existing {
                    Some(part) => {
                        if configs_changed {
                            part.set_log_config(log_config.clone());
                        }
                        part
                    }
                    None => {
                        match self.open_replica(&topic, index, &meta.record.id, &log_config, now) {
                            Ok(part) => part,
                            Err(e) => {
                                warn!(topic = %name, partition = index, error = %e, "cannot open partition replica");
                                partitions.push(None);
                                complete = false;
                                continue;
                            }
                        }
                    }
                };
                let role = if !registered {
                    Role::None
                } else if p.leader == me {
                    Role::Leader
                } else if p.leader >= 0 {
                    Role::Follower { leader: p.leader }
                } else {
                    Role::None
                };
                part.set_role(role, p.leader_epoch, &p.isr, &p.replicas, now);
                note_role(
                    role,
                    name,
                    index,
                    &part,
                    &mut followed,
                    &mut offsets_led,
                    &mut txn_state_led,
                );
                partitions.push(Some(part));
            }
            if complete {
                next.built_from.insert(name.clone(), Arc::clone(meta));
            }
            let ts = Arc::new(TopicState {
                record: meta.record.clone(),
                partitions,
            });
            next.by_id.insert(meta.record.id, Arc::clone(&ts));
            next.by_name.insert(name.clone(), ts);
        }
        // Topics gone from the metadata (deleted, or recreated under a new id).
        for (name, t) in &old {
            if next.by_id.contains_key(&t.record.id) {
                continue;
            }
            if !registered {
                if !next.by_name.contains_key(name) {
                    next.by_id.insert(t.record.id, Arc::clone(t));
                    next.by_name.insert(name.clone(), Arc::clone(t));
                }
                continue;
            }
            for p in t.local() {
                removed.push(self.remove_replica(p, &t.record.id, now));
            }
            info!(topic = %name, "removed local replicas of a deleted topic");
        }
        *self.topics.write() = next;
        Applied {
            followed,
            removed,
            offsets_led,
            txn_state_led,
        }
    }

    fn open_replica(
        &self,
        topic: &Arc<str>,
        index: i32,
        topic_id: &Uuid,
        log_config: &crate::log::LogConfig,
        now: i64,
    ) -> anyhow::Result<Arc<Partition>> {
        let dir = partition_dir(&self.config.data_dir, topic, index);
        let id_file = dir.join(TOPIC_ID_FILE);
        match fs::read_to_string(&id_file) {
            Ok(existing) if existing.trim() != topic_id.to_string() => {
                // Data of an older topic with the same name: not ours.
                info!(dir = %dir.display(), "discarding the data of a previous topic with the same name");
                fs::remove_dir_all(&dir)?;
            }
            _ => {}
        }
        let log = PartitionLog::open(&dir, log_config.clone(), self.clean_start, now)
            .map_err(|e| anyhow::anyhow!("cannot open partition {topic}-{index}: {e}"))?;
        if !id_file.exists() {
            fs::write(&id_file, topic_id.to_string())?;
        }
        Ok(Arc::new(Partition::new(
            Arc::clone(topic),
            index,
            log,
            self.node_id,
            Arc::clone(&self.appended),
        )))
    }

    /// Stops serving a replica and moves its directory aside; the reconcile
    /// deletes the files once it is done (see [`replica_removal`]).
    fn remove_replica(&self, p: &Arc<Partition>, topic_id: &Uuid, now: i64) -> RemovedReplica {
        p.set_role(Role::None, p.leader_epoch(), &[], &[], now);
        let dir = partition_dir(&self.config.data_dir, &p.topic, p.index);
        replica_removal::move_aside(&self.config.data_dir, &dir, &p.topic, p.index, topic_id)
    }

    /// Runs retention on every partition, and forgets producers idle for longer than
    /// `producer_id_expiration_ms` (Kafka checks every 10 minutes; this period is of
    /// the same order and needs no timer of its own).
    /// Returns the segments deleted, by topic.
    pub fn run_retention(&self, now: i64) -> Vec<(String, usize)> {
        let mut deleted = Vec::new();
        for t in self.all_topics() {
            for p in t.local() {
                let expired = p.expire_producers(now, self.config.producer_id_expiration_ms);
                if expired > 0 {
                    debug!(topic = %t.record.name, partition = p.index, expired, "expired idle producer ids");
                }
                match p.apply_retention(now) {
                    Ok(0) => {}
                    Ok(n) => deleted.push((t.record.name.clone(), n)),
                    Err(e) => {
                        warn!(topic = %t.record.name, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
        deleted
    }

    /// The replicas of compacted topics hosted here, leaders and followers alike
    /// (every replica cleans its own log).
    pub fn cleanable_logs(&self) -> Vec<Arc<dyn crate::log::cleaner::service::CleanableLog>> {
        let mut logs: Vec<Arc<dyn crate::log::cleaner::service::CleanableLog>> = Vec::new();
        for t in self.all_topics() {
            for p in t.local() {
                if p.log_config().compaction.is_some() {
                    logs.push(Arc::clone(p) as _);
                }
            }
        }
        logs
    }

    /// The periodic flush of every replica: rolled segments, changed epoch
    /// checkpoints, and active segments whose `flush.ms` is due.
    pub fn run_flush(&self, now: i64) {
        for t in self.all_topics() {
            for p in t.local() {
                if let Err(e) = p.sync_background(now) {
                    warn!(topic = %t.record.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Flushes every log (clean shutdown).
    pub fn close(&self, now: i64) -> Result<(), crate::log::LogError> {
        for t in self.all_topics() {
            for p in t.local() {
                p.close(now)?;
            }
        }
        Ok(())
    }
}

/// How a coordinator's loaded partitions (`owned`: index → the replica and the
/// leader epoch it was loaded in) compare with the partitions this broker leads
/// now: the ones to forget (no longer led, or led in another epoch, whose log may
/// have been truncated) and the ones to load.
pub fn leadership_delta(
    owned: impl Iterator<Item = (i32, Arc<Partition>, i32)>,
    led: &HashMap<i32, Arc<Partition>>,
) -> (Vec<i32>, Vec<(i32, Arc<Partition>)>) {
    let mut kept = HashSet::new();
    let mut lost = Vec::new();
    for (i, partition, epoch) in owned {
        let same = led
            .get(&i)
            .is_some_and(|p| Arc::ptr_eq(p, &partition) && p.leader_epoch() == epoch);
        if same {
            kept.insert(i);
        } else {
            lost.push(i);
        }
    }
    let gained = led
        .iter()
        .filter(|(i, _)| !kept.contains(i))
        .map(|(i, p)| (*i, Arc::clone(p)))
        .collect();
    (lost, gained)
}
