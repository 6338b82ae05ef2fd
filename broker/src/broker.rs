//! The broker's shared state: configuration, the metadata quorum, the partition
//! replicas hosted here, plus the lifecycle (open, register with the controller,
//! follow metadata, periodic retention and flushing, clean close). Protocol handlers
//! reach everything through [`Broker`].
//!
//! Metadata flows one way: every change is a [`Command`] proposed to the quorum; each
//! broker applies the committed commands to its copy of [`ClusterState`] and then
//! *reconciles* — opens the logs of partitions assigned to it, gives each replica the
//! role (leader or follower, with its epoch and ISR) the state says, starts or stops
//! follower fetchers, and moves group coordination with `__consumer_offsets`
//! leadership.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{watch, Mutex as AsyncMutex};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::group::coordinator::{CoordinatorConfig, GroupCoordinator};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::state::GroupConfig;
use crate::log::PartitionLog;
use crate::metadata::cluster::{self, ClusterState, Command};
use crate::metadata::{topic_config, validate_topic_name, MetadataError, TopicRecord};
use crate::partition::{Partition, Role};
use crate::producer::id_allocator::ProducerIdAllocator;
use crate::quorum::{Quorum, QuorumConfig};
use crate::replica_removal::{self, RemovedReplica};
use crate::replication::Fetchers;
use crate::telemetry::Metrics;
use crate::tier::Tier;

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
}

pub struct Broker {
    pub config: BrokerConfig,
    pub metrics: Metrics,
    pub producer_ids: ProducerIdAllocator,
    pub groups: GroupCoordinator,
    /// The tier (object store, chunk cache), when one is configured.
    pub tier: Option<Arc<Tier>>,
    pub quorum: Arc<Quorum>,
    topics: RwLock<Topics>,
    /// Bumped on every leader append; follower fetches long-poll on it.
    pub appended: Arc<watch::Sender<u64>>,
    fetchers: Fetchers,
    reconcile_lock: AsyncMutex<()>,
    /// Set once this broker registered and applied the metadata log up to its
    /// registration: before that its copy may be stale, so it leads nothing.
    registered: AtomicBool,
    /// Metadata log index the local replicas were last reconciled with.
    reconciled_index: AtomicU64,
    /// When this broker sent the newest heartbeat that the quorum committed and that
    /// this broker has applied and reconciled since: see [`Broker::holds_lease`].
    lease_from: parking_lot::Mutex<Option<std::time::Instant>>,
    clean_start: bool,
}

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
const TOPIC_ID_FILE: &str = "topic-id";

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

impl Broker {
    /// Opens the data directory and joins the metadata quorum. Partition logs are
    /// opened as the metadata assigns them.
    pub async fn open(config: BrokerConfig, metrics: Metrics) -> anyhow::Result<Arc<Self>> {
        let data_dir = config.data_dir.clone();
        fs::create_dir_all(&data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
        let marker = data_dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        if clean {
            fs::remove_file(&marker)?;
        } else {
            info!("no clean-shutdown marker: validating the tail of every partition log");
        }
        replica_removal::sweep(&data_dir);
        let quorum = Quorum::start(QuorumConfig {
            node_id: config.node_id as u64,
            dir: data_dir.join("meta").join("raft"),
            advertised: config.advertised_internal(),
            voters: config.voters()?,
            election_timeout_ms: config.controller_election_timeout_ms,
        })
        .await?;
        let groups = GroupCoordinator::new(CoordinatorConfig {
            group: GroupConfig {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            },
            offsets_partitions: config.offsets_topic_partitions,
            offsets_retention_ms: config.offsets_retention_ms,
            compact_after_segments: 4,
            max_metadata_bytes: config.offset_metadata_max_bytes,
        });
        let tier = match config.tier_backend(&|k| std::env::var(k).ok())? {
            Some(backend) => {
                info!(?backend, prefix = %config.tier_prefix, "tiered storage enabled");
                Some(Tier::open(
                    &config,
                    &backend,
                    &metrics,
                    Arc::clone(&quorum) as Arc<dyn crate::tier::catalog::Catalog>,
                )?)
            }
            None => None,
        };
        let (appended, _) = watch::channel(0u64);
        let broker = Arc::new(Broker {
            config,
            metrics,
            producer_ids: ProducerIdAllocator::default(),
            groups,
            tier,
            quorum,
            topics: RwLock::new(Topics::default()),
            appended: Arc::new(appended),
            fetchers: Fetchers::default(),
            reconcile_lock: AsyncMutex::new(()),
            registered: AtomicBool::new(false),
            reconciled_index: AtomicU64::new(0),
            lease_from: parking_lot::Mutex::new(None),
            clean_start: clean,
        });
        broker.metrics.register_group_lag(Arc::downgrade(&broker));
        broker
            .metrics
            .register_data_dir(broker.config.data_dir.clone());
        Ok(broker)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Whether this broker has registered with the controller and caught up.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// Records that a heartbeat sent at `sent` was committed, and that this broker's
    /// replicas and groups reflect the metadata up to it.
    pub fn renew_lease(&self, sent: std::time::Instant) {
        let mut lease = self.lease_from.lock();
        if lease.is_none_or(|t| t < sent) {
            *lease = Some(sent);
        }
    }

    /// Whether this broker may still act on what its metadata says it owns (the
    /// groups it coordinates). The controller fences a broker whose heartbeats stop
    /// for `broker_session_timeout_ms` and only then moves its leaderships, so until
    /// a session (less one heartbeat interval, for clock skew) has passed since the
    /// last heartbeat it knows was committed, nobody else can own them. A broker
    /// paused or cut off for longer must not answer from its old view (it served a
    /// group's committed offsets from before the pause while a new coordinator
    /// already had newer ones) until a new heartbeat is committed and applied, which
    /// also brings it the elections it missed.
    pub fn holds_lease(&self) -> bool {
        let margin = self
            .config
            .broker_session_timeout_ms
            .saturating_sub(self.config.broker_heartbeat_interval_ms as i64)
            .max(0) as u64;
        self.lease_from
            .lock()
            .is_some_and(|t| t.elapsed() < Duration::from_millis(margin))
    }

    /// Whether this broker coordinates `group` now: it leads the group's
    /// `__consumer_offsets` partition and holds its lease.
    pub fn coordinates(&self, group: &str) -> bool {
        self.holds_lease() && self.groups.is_coordinator(group)
    }

    /// Ready to serve clients: registered, and the group coordinator's topic exists.
    pub fn is_ready(&self) -> bool {
        self.is_registered() && self.topic(OFFSETS_TOPIC).is_some()
    }

    pub fn cluster(&self) -> Arc<ClusterState> {
        self.quorum.state()
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

    /// Creates a topic (or only validates it with `validate_only`). `partitions` or
    /// `replication_factor` of -1 take the broker defaults.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicState>, MetadataError> {
        let partitions = if partitions == -1 {
            self.config.default_partitions
        } else {
            partitions
        };
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        validate_topic_name(name)?;
        if !(1..=crate::metadata::MAX_PARTITIONS).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions(format!(
                "must be between 1 and {}, got {partitions}",
                crate::metadata::MAX_PARTITIONS
            )));
        }
        if rf < 1 {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "must be >= 1, got {rf}"
            )));
        }
        topic_config::validate(&configs).map_err(MetadataError::InvalidConfig)?;
        let state = self.cluster();
        if state.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        let start = (Uuid::new_v4().as_u128() % 1024) as usize;
        let assignment = cluster::assign_replicas(&state, partitions, rf, start)?;
        let record = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            configs,
            internal: name.starts_with("__"),
        };
        if validate_only {
            return Ok(Arc::new(TopicState {
                record,
                partitions: Vec::new(),
            }));
        }
        let id = record.id;
        let (index, _) = self
            .quorum
            .propose(Command::CreateTopic { record, assignment })
            .await?;
        info!(topic = name, partitions, rf, "created topic");
        self.wait_for_local(name, Some(id), index).await
    }

    /// Waits until this broker applied `index` and reconciled topic `name`.
    async fn wait_for_local(
        &self,
        name: &str,
        id: Option<Uuid>,
        index: u64,
    ) -> Result<Arc<TopicState>, MetadataError> {
        self.wait_reconciled(index).await;
        if let Some(t) = self.topic(name) {
            if id.is_none_or(|id| t.record.id == id) {
                return Ok(t);
            }
        }
        Err(MetadataError::Quorum(format!(
            "topic `{name}` was committed but is not visible on this broker yet"
        )))
    }

    /// Deletes a topic; every replica removes its data when it applies the change.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicRecord, MetadataError> {
        let state = self.cluster();
        let Some(t) = state.topics.get(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        let record = t.record.clone();
        let (index, _) = self
            .quorum
            .propose(Command::DeleteTopic {
                name: name.to_string(),
            })
            .await?;
        // The quorum now lists the topic's remote data for removal (by the controller's
        // tier pass), if it had any.
        self.wait_reconciled(index).await;
        info!(topic = name, "deleted topic");
        Ok(record)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), MetadataError> {
        let state = self.cluster();
        let Some(t) = state.topics.get(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        let current = t.record.partitions;
        if count <= current {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic `{name}` has {current} partitions; the count can only grow, got {count}"
            )));
        }
        if count > crate::metadata::MAX_PARTITIONS {
            return Err(MetadataError::InvalidPartitions(format!(
                "at most {} partitions",
                crate::metadata::MAX_PARTITIONS
            )));
        }
        let assignment = cluster::assign_replicas(
            &state,
            count - current,
            t.record.replication_factor,
            current as usize,
        )?;
        if validate_only {
            return Ok(());
        }
        let (index, _) = self
            .quorum
            .propose(Command::AddPartitions {
                name: name.to_string(),
                assignment,
            })
            .await?;
        self.wait_reconciled(index).await;
        info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MetadataError> {
        if !self.cluster().topics.contains_key(name) {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        }
        topic_config::validate(&configs).map_err(MetadataError::InvalidConfig)?;
        let (index, _) = self
            .quorum
            .propose(Command::SetTopicConfigs {
                name: name.to_string(),
                configs,
            })
            .await?;
        self.wait_reconciled(index).await;
        Ok(())
    }

    /// Waits (bounded, 5 s) until the local replicas reflect metadata up to `index`;
    /// false when they do not yet.
    pub async fn wait_reconciled(&self, index: u64) -> bool {
        for _ in 0..500 {
            if self.reconciled_index.load(Ordering::Acquire) >= index {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Proposes `cmd` and waits (up to 5 s) until this broker applied it, so an
    /// admin answer right after reflects the change.
    async fn commit(&self, cmd: Command) -> Result<(), MetadataError> {
        let (index, _) = self.quorum.propose(cmd).await?;
        self.quorum
            .wait_applied(index, Duration::from_secs(5))
            .await;
        Ok(())
    }

    /// Marks a broker draining (or not); the controller then moves its replicas.
    pub async fn set_draining(&self, id: i32, draining: bool) -> Result<(), MetadataError> {
        self.commit(Command::SetDraining { id, draining }).await
    }

    /// Forgets broker `id` (see [`Command::UnregisterBroker`]).
    pub async fn unregister_broker(&self, id: i32) -> Result<(), MetadataError> {
        self.commit(Command::UnregisterBroker { id }).await
    }

    /// Records `rf` as the topic's replication factor and starts the `moves` that
    /// give its partitions that many replicas (see `replication_factor_moves`).
    pub async fn set_replication_factor(
        &self,
        topic: &str,
        rf: i16,
        moves: Vec<(i32, Vec<i32>)>,
    ) -> Result<(), MetadataError> {
        self.commit(Command::SetReplicationFactor {
            name: topic.to_string(),
            replication_factor: rf,
            moves,
        })
        .await
    }

    /// Starts moving a partition to `target` replicas.
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Vec<i32>,
    ) -> Result<(), MetadataError> {
        self.commit(Command::Reassign {
            topic: topic.to_string(),
            partition,
            target,
        })
        .await
    }

    /// Brings the local replicas in line with the metadata: opens, removes and
    /// re-roles partitions, and restarts fetchers and group coordination to match.
    /// The files of removed replicas are deleted afterwards, on a blocking thread of
    /// their own, so a large deleted topic does not hold up the next reconcile.
    pub async fn reconcile(self: &Arc<Self>) {
        let _g = self.reconcile_lock.lock().await;
        let b = Arc::clone(self);
        match tokio::task::spawn_blocking(move || b.reconcile_blocking()).await {
            Ok((followed, removed)) => {
                self.fetchers.update(self, followed);
                if !removed.is_empty() {
                    tokio::task::spawn_blocking(move || replica_removal::remove(&removed));
                }
            }
            Err(e) => warn!(error = %e, "reconcile task failed"),
        }
    }

    /// The reconcile's work on the runtime's blocking pool: returns the replicas to
    /// fetch, by leader, and the removed replicas whose files are to be deleted.
    fn reconcile_blocking(
        self: &Arc<Self>,
    ) -> (HashMap<i32, Vec<Arc<Partition>>>, Vec<RemovedReplica>) {
        let published = self.quorum.published();
        let state = published.state;
        let me = self.node_id();
        let registered = self.is_registered();
        let now = now_ms();
        let old: HashMap<String, Arc<TopicState>> = self.topics.read().by_name.clone();
        let mut next = Topics::default();
        let mut followed: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        let mut offsets_led: HashSet<i32> = HashSet::new();
        let mut removed: Vec<RemovedReplica> = Vec::new();
        for (name, meta) in &state.topics {
            let prev = old.get(name).filter(|t| t.record.id == meta.record.id);
            let log_config = topic_config::log_config(&meta.record.configs, &self.config);
            let configs_changed = prev.is_some_and(|t| t.record.configs != meta.record.configs);
            let topic: Arc<str> = Arc::from(name.as_str());
            let mut partitions = Vec::with_capacity(meta.partitions.len());
            for (i, p) in meta.partitions.iter().enumerate() {
                let index = i as i32;
                let existing = prev.and_then(|t| t.partition(index)).cloned();
                if !p.replicas.contains(&me) {
                    if let Some(part) = existing {
                        if registered {
                            removed.push(self.remove_replica(&part, &meta.record.id));
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
                match role {
                    Role::Follower { leader } => {
                        followed.entry(leader).or_default().push(Arc::clone(&part))
                    }
                    Role::Leader if name == OFFSETS_TOPIC => {
                        offsets_led.insert(index);
                    }
                    _ => {}
                }
                partitions.push(Some(part));
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
                removed.push(self.remove_replica(p, &t.record.id));
            }
            info!(topic = %name, "removed local replicas of a deleted topic");
        }
        *self.topics.write() = next;
        if registered {
            self.groups.set_owned(self, &offsets_led);
        }
        self.reconciled_index
            .fetch_max(published.applied_index, Ordering::AcqRel);
        (followed, removed)
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
            self.node_id(),
            Arc::clone(&self.appended),
        )))
    }

    /// Stops serving a replica and moves its directory aside; the reconcile
    /// deletes the files once it is done (see [`replica_removal`]).
    fn remove_replica(&self, p: &Arc<Partition>, topic_id: &Uuid) -> RemovedReplica {
        p.set_role(Role::None, p.leader_epoch(), &[], &[], now_ms());
        let dir = partition_dir(&self.config.data_dir, &p.topic, p.index);
        replica_removal::move_aside(&self.config.data_dir, &dir, &p.topic, p.index, topic_id)
    }

    /// Runs retention on every partition, and forgets producers idle for longer than
    /// `producer_id_expiration_ms` (Kafka checks every 10 minutes; this period is of
    /// the same order and needs no timer of its own).
    pub fn run_retention(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in t.local() {
                let expired = p.expire_producers(now, self.config.producer_id_expiration_ms);
                if expired > 0 {
                    debug!(topic = %t.record.name, partition = p.index, expired, "expired idle producer ids");
                }
                match p.apply_retention(now) {
                    Ok(0) => {}
                    Ok(n) => self
                        .metrics
                        .segments_deleted
                        .add(n as u64, &Metrics::topic(&t.record.name)),
                    Err(e) => {
                        warn!(topic = %t.record.name, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// fsyncs partitions whose `flush.ms` is due.
    pub fn run_flush(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in t.local() {
                if let Err(e) = p.sync_background(now) {
                    warn!(topic = %t.record.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Starts the background tasks; they stop when the broker is dropped.
    pub fn spawn_background(self: &Arc<Self>) {
        crate::replication::spawn_cluster_tasks(self);
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.config.retention_check_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || b.run_retention()).await;
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                let now = now_ms();
                b.groups.tick(now);
                n += 1;
                if n.is_multiple_of(600) {
                    // Offset expiry and compaction, once a minute.
                    let _ = tokio::task::spawn_blocking(move || b.groups.maintain(now)).await;
                }
            }
        });
        if self.tier.is_some() {
            let weak = Arc::downgrade(self);
            let every = Duration::from_millis(self.config.tier_upload_interval_ms.max(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(b) = weak.upgrade() else { return };
                    b.run_tier_upload().await;
                }
            });
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || b.run_flush()).await;
            }
        });
    }

    pub(crate) fn set_registered(&self) {
        if !self.registered.swap(true, Ordering::AcqRel) {
            info!(
                node_id = self.node_id(),
                "registered with the controller; serving partitions"
            );
        }
    }

    /// One tier pass: uploads, remote retention, deleted topics' remote data.
    pub async fn run_tier_upload(&self) {
        if let Some(tier) = &self.tier {
            tier.run_pass(self).await;
        }
    }

    /// Flushes every log and leaves the clean-shutdown marker.
    pub fn close(&self) -> anyhow::Result<()> {
        let now = now_ms();
        for t in self.all_topics() {
            for p in t.local() {
                p.close(now)?;
            }
        }
        fs::write(self.config.data_dir.join(CLEAN_SHUTDOWN), b"")?;
        info!("broker storage closed cleanly");
        Ok(())
    }

    /// Stops the quorum member (after the listeners stopped).
    pub async fn shutdown(&self) {
        self.fetchers.stop_all();
        self.quorum.shutdown().await;
        debug!("metadata quorum stopped");
    }
}
