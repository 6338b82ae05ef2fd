//! The broker's shared state: configuration, the topic catalog and the partitions
//! hosted here, plus the lifecycle (open with recovery, periodic retention and
//! flushing, clean close). Protocol handlers reach everything through [`Broker`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::group::coordinator::{CoordinatorConfig, GroupCoordinator};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::group::state::GroupConfig;
use crate::log::PartitionLog;
use crate::metadata::{topic_config, Catalog, MetadataError, TopicRecord};
use crate::partition::Partition;
use crate::producer::id_allocator::ProducerIdAllocator;
use crate::telemetry::Metrics;
use crate::tier::Tier;

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A topic and its partitions, as an immutable snapshot; changes swap in a new one.
#[derive(Debug)]
pub struct TopicState {
    pub record: TopicRecord,
    pub partitions: Vec<Arc<Partition>>,
}

impl TopicState {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
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
    /// The tier (object store, chunk cache, manifests), when one is configured.
    pub tier: Option<Arc<Tier>>,
    catalog: AsyncMutex<Catalog>,
    topics: RwLock<Topics>,
}

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";

fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

impl Broker {
    /// Opens the data directory, recovering every partition log.
    pub fn open(config: BrokerConfig, metrics: Metrics) -> anyhow::Result<Arc<Self>> {
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
        let mut catalog = Catalog::open(&data_dir)?;
        let now = now_ms();
        if catalog.get(OFFSETS_TOPIC).is_none() {
            let mut configs = BTreeMap::new();
            configs.insert(
                "segment.bytes".to_string(),
                config.offsets_segment_bytes.to_string(),
            );
            configs.insert("retention.ms".to_string(), "-1".to_string());
            configs.insert("retention.bytes".to_string(), "-1".to_string());
            catalog.create_topic(
                TopicRecord {
                    name: OFFSETS_TOPIC.to_string(),
                    id: Uuid::new_v4(),
                    partitions: config.offsets_topic_partitions,
                    replication_factor: 1,
                    configs,
                    internal: true,
                },
                true,
            )?;
        }
        let mut topics = Topics::default();
        for rec in catalog.topics() {
            let state = Arc::new(open_topic(&config, rec, clean, now)?);
            topics.by_id.insert(rec.id, Arc::clone(&state));
            topics.by_name.insert(rec.name.clone(), state);
        }
        remove_deleted_dirs(&data_dir);
        info!(topics = topics.by_name.len(), data_dir = %data_dir.display(), "broker storage opened");
        let producer_ids = ProducerIdAllocator::open(&data_dir)?;
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
                Some(Tier::open(&config, &backend, &metrics)?)
            }
            None => None,
        };
        let broker = Arc::new(Broker {
            config,
            metrics,
            producer_ids,
            groups,
            tier,
            catalog: AsyncMutex::new(catalog),
            topics: RwLock::new(topics),
        });
        broker.groups.load(&broker)?;
        broker.metrics.register_group_lag(Arc::downgrade(&broker));
        Ok(broker)
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
        if rf < 1 {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "must be >= 1, got {rf}"
            )));
        }
        let brokers = 1;
        if rf > brokers {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "replication factor {rf} is larger than the {brokers} available broker(s)"
            )));
        }
        let mut catalog = self.catalog.lock().await;
        let rec = TopicRecord {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            configs,
            internal: name.starts_with("__"),
        };
        let rec = catalog.create_topic(rec, false)?;
        if validate_only {
            return Ok(Arc::new(TopicState {
                record: rec,
                partitions: Vec::new(),
            }));
        }
        // Leftovers from a topic of the same name deleted before a crash.
        for p in 0..partitions {
            let dir = partition_dir(&self.config.data_dir, name, p);
            if dir.exists() {
                let _ = fs::remove_dir_all(&dir);
            }
        }
        let state = Arc::new(open_topic(&self.config, &rec, true, now_ms()).map_err(|e| {
            MetadataError::Io {
                path: self.config.data_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?);
        catalog.create_topic(rec.clone(), true)?;
        let mut t = self.topics.write();
        t.by_id.insert(rec.id, Arc::clone(&state));
        t.by_name.insert(rec.name.clone(), Arc::clone(&state));
        info!(topic = name, partitions, "created topic");
        Ok(state)
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicRecord, MetadataError> {
        let mut catalog = self.catalog.lock().await;
        let rec = catalog.delete_topic(name)?;
        let state = {
            let mut t = self.topics.write();
            t.by_id.remove(&rec.id);
            t.by_name.remove(name)
        };
        if let Some(state) = state {
            for p in &state.partitions {
                let dir = partition_dir(&self.config.data_dir, name, p.index);
                let doomed = self.config.data_dir.join(format!(
                    "{name}-{}.{}-delete",
                    p.index,
                    rec.id.simple()
                ));
                if let Err(e) = fs::rename(&dir, &doomed) {
                    warn!(dir = %dir.display(), error = %e, "could not move deleted partition aside");
                }
            }
            if let Some(tier) = &self.tier {
                tier.schedule_topic_deletion(&rec);
            }
            tokio::task::spawn_blocking({
                let data_dir = self.config.data_dir.clone();
                move || remove_deleted_dirs(&data_dir)
            });
        }
        info!(topic = name, "deleted topic");
        Ok(rec)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), MetadataError> {
        let mut catalog = self.catalog.lock().await;
        let rec = catalog.set_partition_count(name, count, false)?;
        if validate_only {
            return Ok(());
        }
        let Some(old) = self.topic(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        let log_config = topic_config::log_config(&rec.configs, &self.config);
        let topic: Arc<str> = Arc::from(name);
        let mut partitions = old.partitions.clone();
        for p in old.partitions.len() as i32..count {
            let dir = partition_dir(&self.config.data_dir, name, p);
            let log =
                PartitionLog::open(&dir, log_config.clone(), true, now_ms()).map_err(|e| {
                    MetadataError::Io {
                        path: dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
            partitions.push(Arc::new(Partition::new(Arc::clone(&topic), p, log)));
        }
        let rec = catalog.set_partition_count(name, count, true)?;
        self.swap_topic(TopicState {
            record: rec,
            partitions,
        });
        info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config and applies it to the open logs.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), MetadataError> {
        let mut catalog = self.catalog.lock().await;
        let rec = catalog.set_configs(name, configs)?;
        let Some(old) = self.topic(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        let lc = topic_config::log_config(&rec.configs, &self.config);
        for p in &old.partitions {
            p.set_log_config(lc.clone());
        }
        self.swap_topic(TopicState {
            record: rec,
            partitions: old.partitions.clone(),
        });
        Ok(())
    }

    fn swap_topic(&self, state: TopicState) {
        let state = Arc::new(state);
        let mut t = self.topics.write();
        t.by_id.insert(state.record.id, Arc::clone(&state));
        t.by_name.insert(state.record.name.clone(), state);
    }

    /// Runs retention on every partition.
    pub fn run_retention(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            for p in &t.partitions {
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
            for p in &t.partitions {
                if let Err(e) = p.flush_if_due(now) {
                    warn!(topic = %t.record.name, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Starts retention and flush tasks; they stop when the broker is dropped.
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
                if n.is_multiple_of(600) {
                    // Offset expiry and compaction, once a minute.
                    let _ = tokio::task::spawn_blocking(move || b.groups.maintain(&b, now)).await;
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
            for p in &t.partitions {
                p.close(now)?;
            }
        }
        fs::write(self.config.data_dir.join(CLEAN_SHUTDOWN), b"")?;
        info!("broker storage closed cleanly");
        Ok(())
    }
}

fn open_topic(
    config: &BrokerConfig,
    rec: &TopicRecord,
    clean: bool,
    now: i64,
) -> anyhow::Result<TopicState> {
    let log_config = topic_config::log_config(&rec.configs, config);
    let topic: Arc<str> = Arc::from(rec.name.as_str());
    let mut partitions = Vec::with_capacity(rec.partitions as usize);
    for p in 0..rec.partitions {
        let dir = partition_dir(&config.data_dir, &rec.name, p);
        let log = PartitionLog::open(&dir, log_config.clone(), clean, now)
            .map_err(|e| anyhow::anyhow!("cannot open partition {}-{p}: {e}", rec.name))?;
        partitions.push(Arc::new(Partition::new(Arc::clone(&topic), p, log)));
    }
    Ok(TopicState {
        record: rec.clone(),
        partitions,
    })
}

fn remove_deleted_dirs(data_dir: &Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with("-delete") {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                warn!(dir = %e.path().display(), error = %err, "could not remove deleted partition");
            }
        }
    }
}
