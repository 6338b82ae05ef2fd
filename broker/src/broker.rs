//! The broker's services and its lifecycle: configuration, the metadata quorum,
//! the replica manager ([`ReplicaManager`], the partitions hosted here), the group
//! coordinator, the tier and the producer-id allocator, built by [`Broker::open`];
//! registration state and the lease; the topic admin operations (proposed to the
//! quorum); periodic housekeeping; clean close. The application (`app.rs`) is the
//! composition root that starts the replication tasks and the listeners on top.
//!
//! Metadata flows one way: every change is a [`Command`] proposed to the quorum; each
//! broker applies the committed commands to its copy of [`ClusterState`] and then
//! *reconciles* ([`Broker::reconcile_blocking`], driven by `replication`): the replica
//! manager opens, re-roles and removes replicas, the group coordinator follows
//! `__consumer_offsets` leadership, and the follower fetchers follow the leaders.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::group::coordinator::{CoordinatorConfig, GroupCoordinator};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::state::GroupConfig;
use crate::metadata::cluster::{self, ClusterState, Command};
use crate::metadata::{topic_config, validate_topic_name, MetadataError, TopicRecord};
use crate::producer::id_allocator::ProducerIdAllocator;
use crate::quorum::{Quorum, QuorumConfig};
use crate::replica_removal;
use crate::replicas::{Applied, ReplicaManager, TopicState};
use crate::telemetry::Metrics;
use crate::tier::Tier;
use crate::txn::{TransactionCoordinator, TxnConfig, TXN_STATE_TOPIC};

pub struct Broker {
    pub config: BrokerConfig,
    pub metrics: Metrics,
    pub producer_ids: ProducerIdAllocator,
    pub groups: Arc<GroupCoordinator>,
    /// The transaction coordinator.
    pub txns: Arc<TransactionCoordinator>,
    /// The tier (object store, chunk cache), when one is configured.
    pub tier: Option<Arc<Tier>>,
    pub quorum: Arc<Quorum>,
    /// The partitions hosted here.
    pub replicas: Arc<ReplicaManager>,
    /// Client quota usage measured on this broker.
    pub quotas: crate::quota::QuotaManager,
    /// Byte budgets of throttled replication traffic (reassignments).
    pub throttles: crate::replication::Throttles,
    /// The ACL authorizer, when `authorizer_class_name` configures one.
    pub authorizer: Option<crate::security::authorizer::Authorizer>,
    /// Set once this broker registered and applied the metadata log up to its
    /// registration: before that its copy may be stale, so it leads nothing.
    registered: AtomicBool,
    /// Metadata log index the local replicas were last reconciled with.
    reconciled_index: AtomicU64,
    /// When this broker sent the newest heartbeat that the quorum committed and that
    /// this broker has applied and reconciled since: see [`Broker::holds_lease`].
    lease_from: parking_lot::Mutex<Option<std::time::Instant>>,
}

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";

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
            peer_security: crate::security::admin::AdminClientSecurity::for_broker(&config)
                .map_err(|e| anyhow::anyhow!("admin_token_file: {e}"))?,
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
        let replicas = Arc::new(ReplicaManager::new(config.clone(), clean));
        let groups = Arc::new(groups);
        let txns = Arc::new(TransactionCoordinator::new(TxnConfig {
            partitions: config.transaction_state_partitions,
            max_timeout_ms: config.transaction_max_timeout_ms,
            id_expiration_ms: config.transactional_id_expiration_ms,
        }));
        metrics.register_cluster_gauges(crate::telemetry::ClusterView {
            groups: Arc::downgrade(&groups),
            replicas: Arc::downgrade(&replicas),
            quorum: Arc::downgrade(&quorum),
            node_id: config.node_id,
        });
        let quotas = crate::quota::QuotaManager::new(Some(&metrics.meter()));
        let authorizer = crate::security::authorizer::settings(&config)?
            .map(|s| crate::security::authorizer::Authorizer::new(s, &metrics.meter()));
        let broker = Arc::new(Broker {
            config,
            metrics,
            producer_ids: ProducerIdAllocator::default(),
            groups,
            txns,
            tier,
            quorum,
            replicas,
            quotas,
            throttles: Default::default(),
            authorizer,
            registered: AtomicBool::new(false),
            reconciled_index: AtomicU64::new(0),
            lease_from: parking_lot::Mutex::new(None),
        });
        broker
            .metrics
            .register_data_dir(broker.config.data_dir.clone());
        broker.metrics.register_index_memory();
        broker.metrics.register_transactions(
            Arc::downgrade(&broker.txns),
            Arc::downgrade(&broker.replicas),
        );
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

    /// Whether this broker coordinates `transactional_id` now: it leads and loaded
    /// the id's `__transaction_state` partition and holds its lease.
    pub fn coordinates_txn(&self, transactional_id: &str) -> bool {
        self.holds_lease() && self.txns.is_coordinator(transactional_id)
    }

    /// Ready to serve clients: registered, and the group coordinator's topic exists.
    pub fn is_ready(&self) -> bool {
        self.is_registered() && self.replicas.topic(OFFSETS_TOPIC).is_some()
    }

    pub fn cluster(&self) -> Arc<ClusterState> {
        self.quorum.state()
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
        self.create_topic_placed(
            name,
            partitions,
            replication_factor,
            None,
            configs,
            validate_only,
        )
        .await
    }

    /// Creates a topic with the replicas of each partition given (CreateTopics with
    /// a manual assignment, preferred leader first); the quorum checks the brokers.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignment: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<TopicState>, MetadataError> {
        let partitions = assignment.len() as i32;
        let rf = assignment.first().map_or(0, |r| r.len() as i16);
        if assignment.iter().any(|r| r.len() as i16 != rf) {
            return Err(MetadataError::InvalidReplicationFactor(
                "every partition of a manual assignment needs the same number of replicas".into(),
            ));
        }
        self.create_topic_placed(
            name,
            partitions,
            rf,
            Some(assignment),
            configs,
            validate_only,
        )
        .await
    }

    async fn create_topic_placed(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        manual: Option<Vec<Vec<i32>>>,
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
        let assignment = match manual {
            Some(a) => a,
            None => {
                let start = (Uuid::new_v4().as_u128() % 1024) as usize;
                cluster::assign_replicas(&state, partitions, rf, start)?
            }
        };
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
        if let Some(t) = self.replicas.topic(name) {
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
        // The quorum then lists the topic's remote data for removal (by the
        // controller's tier pass), if it had any.
        self.commit_reconciled(Command::DeleteTopic {
            name: name.to_string(),
        })
        .await?;
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
        self.commit_reconciled(Command::AddPartitions {
            name: name.to_string(),
            assignment,
        })
        .await?;
        info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MetadataError> {
        let Some(current) = self
            .cluster()
            .topics
            .get(name)
            .map(|t| t.record.configs.clone())
        else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        topic_config::validate(&configs).map_err(MetadataError::InvalidConfig)?;
        topic_config::compaction::check_change(&current, &configs, &self.config)
            .map_err(MetadataError::InvalidConfig)?;
        self.commit_reconciled(Command::SetTopicConfigs {
            name: name.to_string(),
            configs,
        })
        .await
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
    /// Creates an internal topic (`__consumer_offsets`, `__transaction_state`) once
    /// enough brokers registered for its replication factor
    /// (`offsets_topic_replication_factor`, capped at the voter count, so a single
    /// broker gets RF 1).
    pub fn internal_topic_command(
        &self,
        state: &cluster::ClusterState,
        name: &str,
        partitions: i32,
    ) -> Option<Command> {
        let b = self;
        let voters = b.config.voters().map(|v| v.len()).unwrap_or(1);
        let rf = (b.config.offsets_topic_replication_factor as usize).min(voters);
        let alive = state
            .brokers
            .values()
            .filter(|x| x.status == cluster::BrokerStatus::Alive)
            .count();
        if alive < rf {
            return None;
        }
        let assignment = cluster::assign_replicas(state, partitions, rf as i16, 0).ok()?;
        let mut configs = std::collections::BTreeMap::new();
        configs.insert(
            "segment.bytes".to_string(),
            b.config.offsets_segment_bytes.to_string(),
        );
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert(
            "min.insync.replicas".to_string(),
            if rf >= 3 { "2" } else { "1" }.to_string(),
        );
        Some(Command::CreateTopic {
            record: TopicRecord {
                name: name.to_string(),
                id: Uuid::new_v4(),
                partitions,
                replication_factor: rf as i16,
                configs,
                internal: true,
            },
            assignment,
        })
    }

    /// Creates `__transaction_state` if it does not exist yet: on the first
    /// FindCoordinator for a transaction, as Kafka does, so clusters without
    /// transactions never carry its partitions.
    pub async fn ensure_txn_state_topic(&self) {
        let state = self.cluster();
        if state.topics.contains_key(TXN_STATE_TOPIC) {
            return;
        }
        let Some(cmd) = self.internal_topic_command(
            &state,
            TXN_STATE_TOPIC,
            self.config.transaction_state_partitions,
        ) else {
            return;
        };
        match self.commit(cmd).await {
            Ok(()) => info!("created {TXN_STATE_TOPIC}"),
            Err(e) => debug!(error = %e, "{TXN_STATE_TOPIC} not created (another broker may have)"),
        }
    }

    /// Commits `cmd` and waits (bounded) until the local replicas reflect it.
    async fn commit_reconciled(&self, cmd: Command) -> Result<(), MetadataError> {
        let (index, _) = self.quorum.propose(cmd).await?;
        self.wait_reconciled(index).await;
        Ok(())
    }

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

    /// The live settings: the static ones overlaid with the dynamic broker configs.
    pub fn live_config(&self) -> Arc<BrokerConfig> {
        self.replicas.live_config()
    }

    /// Replaces the dynamic broker configs of `entity` (a broker id, or `""` for
    /// every broker) and waits until they apply here.
    pub async fn set_broker_configs(
        &self,
        entity: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MetadataError> {
        self.commit_reconciled(Command::AlterBrokerConfigs {
            entity: entity.to_string(),
            configs,
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

    /// Applies the published metadata to the hosted replicas and to group
    /// coordination (blocking file I/O: on the blocking pool). Returns what changed,
    /// for the follower fetchers and the deletion of removed replicas' files.
    pub fn reconcile_blocking(&self) -> Applied {
        let published = self.quorum.published();
        let registered = self.is_registered();
        let applied = self.replicas.apply(&published.state, registered, now_ms());
        if registered {
            self.groups.set_owned(&self.replicas, &applied.offsets_led);
            self.txns.set_owned(&self.replicas, &applied.txn_state_led);
        }
        self.reconciled_index
            .fetch_max(published.applied_index, Ordering::AcqRel);
        applied
    }

    /// Runs retention on every replica, counting the deleted segments.
    pub fn run_retention(&self) {
        for (topic, n) in self.replicas.run_retention(now_ms()) {
            self.metrics
                .segments_deleted
                .add(n as u64, &Metrics::topic(&topic));
        }
    }

    /// Starts the periodic housekeeping (retention, group timers and offset expiry,
    /// the tier pass, flushing); the tasks stop when the broker is dropped.
    pub fn spawn_background(self: &Arc<Self>) {
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
                if n.is_multiple_of(10) {
                    // Transaction timeouts and id expiry, once a second.
                    b.txns.tick(now).await;
                }
                if n.is_multiple_of(600) {
                    // Offset expiry, once a minute.
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
                    b.run_tier_pass().await;
                }
            });
        }
        if self.config.log_cleaner_enable {
            let cleaner = Arc::new(crate::log::cleaner::service::LogCleaner::new(
                self.config.log_cleaner_io_max_bytes_per_second,
                &self.metrics.meter(),
            ));
            let weak = Arc::downgrade(self);
            let every = Duration::from_millis(self.config.log_cleaner_backoff_ms);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(b) = weak.upgrade() else { return };
                    let cleaner = Arc::clone(&cleaner);
                    cleaner.set_io_max_bytes_per_second(
                        b.live_config().log_cleaner_io_max_bytes_per_second,
                    );
                    let _ = tokio::task::spawn_blocking(move || {
                        let logs = b.replicas.cleanable_logs();
                        drop(b);
                        cleaner.run_pass(&logs, now_ms())
                    })
                    .await;
                }
            });
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || b.replicas.run_flush(now_ms())).await;
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
    pub async fn run_tier_pass(&self) {
        if let Some(tier) = &self.tier {
            tier.run_pass(&self.replicas, &self.config).await;
        }
    }

    /// Flushes every log and leaves the clean-shutdown marker.
    pub fn close(&self) -> anyhow::Result<()> {
        self.replicas.close(now_ms())?;
        fs::write(self.config.data_dir.join(CLEAN_SHUTDOWN), b"")?;
        info!("broker storage closed cleanly");
        Ok(())
    }

    /// Stops the quorum member (after the listeners stopped).
    pub async fn shutdown(&self) {
        self.quorum.shutdown().await;
        debug!("metadata quorum stopped");
    }
}
