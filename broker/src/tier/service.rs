//! The tier as the broker sees it: the object store, the chunk cache, and the
//! periodic pass that uploads closed segments of the partitions led here, applies
//! total retention to their remote copy, lets every replica (leader or follower)
//! delete locally what the tier holds, and removes the remote data of deleted topics.
//!
//! What is remote is recorded in the metadata quorum (the partition's remote log in
//! [`ClusterState`](crate::metadata::cluster::ClusterState), reached through the
//! [`Catalog`]), never decided locally, so any future leader continues exactly where
//! the committed remote log ends.
//!
//! Order within a pass matters for safety: a segment is uploaded, committed through
//! the quorum (and applied here), and only then is the partition told that the tier
//! reaches that far, which is what allows local retention to delete the local copy.
//! A reader therefore never finds a gap between the remote and the local log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use tracing::{info, warn};
use uuid::Uuid;

use super::cache::{ChunkCache, Lru};
use super::catalog::{self, Catalog};
use super::metrics::TierMetrics;
use super::store::{TierBackend, TierStore};
use super::sweeper;
use super::uploader::{self, MANIFEST_FILE};
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::log::index::OffsetEntry;
use crate::metadata::cluster::Command;
use crate::metadata::remote_log::RemoteLog;
use crate::metadata::{topic_config, TopicRecord};
use crate::partition::Partition;
use crate::producer::ProducerStateTable;
use crate::replicas::ReplicaManager;
use crate::telemetry::Metrics;

/// Bytes of decoded remote offset indexes kept in memory.
const INDEX_CACHE_BYTES: u64 = 32 << 20;

pub struct Tier {
    pub store: TierStore,
    pub(super) cache: Arc<ChunkCache>,
    /// Decoded offset indexes of remote segments, by object key.
    pub(super) indexes: Mutex<Lru<Arc<str>, Arc<Vec<OffsetEntry>>>>,
    /// Aborted transactions of remote segments (`.txnindex`), by object key.
    pub(super) txn_indexes: Mutex<Lru<Arc<str>, Arc<Vec<crate::log::AbortedTxn>>>>,
    pub(super) read_ahead: u32,
    pub metrics: TierMetrics,
    catalog: Arc<dyn Catalog>,
    /// Marker files of topics deleted before the quorum recorded pending remote
    /// deletions; still drained.
    pending_deletes: PathBuf,
    /// Partitions passed at the same time.
    upload_concurrency: usize,
    orphan_sweep_interval_ms: i64,
    orphan_grace_ms: i64,
    /// When each partition led here was last swept for orphans (ms).
    last_sweep: Mutex<HashMap<(Uuid, i32), i64>>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier").field("store", &self.store).finish()
    }
}

impl Tier {
    pub fn open(
        config: &BrokerConfig,
        backend: &TierBackend,
        metrics: &Metrics,
        catalog: Arc<dyn Catalog>,
    ) -> anyhow::Result<Arc<Tier>> {
        let tm = TierMetrics::new(&metrics.meter());
        let store = TierStore::new(backend, &config.tier_prefix)?
            .with_error_counter(tm.object_store_errors.clone());
        let cache_dir = config.tier_cache_path();
        let cache = ChunkCache::open(
            &cache_dir,
            config.tier_cache_bytes,
            config.tier_cache_chunk_bytes,
            tm.clone(),
        )
        .map_err(|e| anyhow::anyhow!("cannot open tier cache {}: {e}", cache_dir.display()))?;
        let pending_deletes = config.data_dir.join("tier-deletes");
        Ok(Arc::new(Tier {
            store,
            cache: Arc::new(cache),
            indexes: Mutex::new(Lru::new(INDEX_CACHE_BYTES)),
            txn_indexes: Mutex::new(Lru::new(INDEX_CACHE_BYTES)),
            read_ahead: config.tier_read_ahead_chunks,
            metrics: tm,
            catalog,
            pending_deletes,
            upload_concurrency: config.tier_upload_concurrency.max(1),
            orphan_sweep_interval_ms: i64::try_from(config.tier_orphan_sweep_interval_ms)
                .unwrap_or(i64::MAX),
            orphan_grace_ms: config.tier_orphan_grace_ms,
            last_sweep: Mutex::new(HashMap::new()),
        }))
    }

    /// The committed remote log of a partition (empty when nothing was uploaded).
    pub fn remote_log(&self, topic_id: &Uuid, p: &Partition) -> Arc<RemoteLog> {
        catalog::remote_log(&self.catalog.state(), &p.topic, topic_id, p.index).unwrap_or_default()
    }

    /// The producer state as of `offset`, from the snapshot uploaded with the remote
    /// segment that ends there; `None` when the tier has no such (valid) snapshot.
    /// A replica restarted at its leader's log start has none of the history before
    /// it, and without this would forget the producers that last wrote there.
    pub async fn producer_snapshot_at(
        &self,
        topic_id: &Uuid,
        p: &Partition,
        offset: i64,
    ) -> Option<ProducerStateTable> {
        let remote = self.remote_log(topic_id, p);
        let seg = remote.segments().iter().find(|s| s.end_offset == offset)?;
        let key = seg.snapshot_key();
        match self.store.get(&key).await {
            Ok(raw) => {
                let table = crate::producer::decode_snapshot(&raw, offset);
                if table.is_none() {
                    warn!(key, "ignoring a damaged producer snapshot in the tier");
                }
                table
            }
            Err(e) => {
                info!(key, error = %e, "no producer snapshot in the tier");
                None
            }
        }
    }

    /// The partition's log start offset (ListOffsets earliest): see [`log_start`],
    /// and never below where DeleteRecords put it.
    pub fn log_start_offset(&self, topic_id: &Uuid, p: &Partition, local_start: i64) -> i64 {
        let remote = self.remote_log(topic_id, p);
        log_start(&remote, local_start).max(deleted_below(&remote, p))
    }

    /// See [`deleted_below`].
    pub fn deleted_below(&self, topic_id: &Uuid, p: &Partition) -> i64 {
        deleted_below(&self.remote_log(topic_id, p), p)
    }

    /// After DeleteRecords on the leader: drops the remote segments wholly below the
    /// new log start from the remote log and deletes their objects, as total retention
    /// does (the next pass retries what fails here).
    pub async fn delete_records(&self, rec: &TopicRecord, p: &Partition) {
        let remote = self.remote_log(&rec.id, p);
        self.expire_remote(rec, p, &remote).await;
    }

    /// One pass: remote data of deleted topics, then for every tiered partition led
    /// here upload, total retention of the remote copy and upload lag; and on every
    /// replica the local-deletion bound from the committed remote log.
    pub async fn run_pass(&self, replicas: &ReplicaManager, config: &BrokerConfig) {
        self.remove_deleted_topics().await;
        let mut led = Vec::new();
        for t in replicas.all_topics() {
            if t.record.internal || !topic_config::remote_storage_enabled(&t.record.configs, config)
            {
                continue;
            }
            for p in t.local() {
                if p.is_leader() {
                    led.push((Arc::clone(&t), Arc::clone(p)));
                } else if let Some(end) = self.remote_log(&t.record.id, p).end_offset() {
                    // A follower deletes locally only what the tier is known to hold.
                    p.set_remote_end_offset(end);
                }
            }
        }
        let led_keys = led.iter().map(|(t, p)| (t.record.id, p.index)).collect();
        // Up to `tier_upload_concurrency` partitions at once; each one's segments go
        // in order, since every commit must continue the one before.
        futures::stream::iter(led)
            .for_each_concurrent(self.upload_concurrency, |(t, p)| async move {
                self.pass_partition(&t.record, &p).await;
            })
            .await;
        self.forget_swept_partitions(&led_keys);
    }

    pub(crate) async fn pass_partition(&self, rec: &TopicRecord, p: &Partition) {
        let labels = Metrics::topic(&rec.name);
        self.migrate_manifest_file(rec, p).await;
        let epoch = p.leader_epoch();
        // The failure counter exists at 0 from the first pass on: Prometheus'
        // increase() over a series that first appears at 1 reports no increase, so
        // an alert on upload failures would miss a partition that never succeeded.
        self.metrics.upload_errors.add(0, &labels);
        match uploader::upload_partition(&self.store, &*self.catalog, p, &rec.id, epoch).await {
            Ok(r) => {
                self.metrics
                    .uploaded_segments
                    .add(r.uploaded_segments as u64, &labels);
                self.metrics.uploaded_bytes.add(r.uploaded_bytes, &labels);
                if r.uploaded_segments > 0 {
                    self.publish_manifest(rec, p).await;
                }
            }
            Err(e) => {
                self.metrics.upload_errors.add(1, &labels);
                warn!(topic = %rec.name, partition = p.index, leader_epoch = epoch, error = %e,
                    "tier upload failed; will retry");
            }
        }
        let remote = self.remote_log(&rec.id, p);
        let end = remote.end_offset();
        if let Some(end) = end {
            p.set_remote_end_offset(end);
        }
        self.expire_remote(rec, p, &remote).await;
        let closed = p.closed_segments();
        let waiting: Vec<_> = closed
            .iter()
            .filter(|s| end.is_none_or(|e| s.end_offset > e))
            .collect();
        let plabels = TierMetrics::partition(&rec.name, p.index);
        self.metrics
            .upload_lag_segments
            .record(waiting.len() as u64, &plabels);
        self.metrics
            .upload_lag_bytes
            .record(waiting.iter().map(|s| s.size_bytes).sum(), &plabels);
        if self.sweep_due(rec, p) {
            self.sweep_orphans(rec, p).await;
        }
    }

    fn sweep_due(&self, rec: &TopicRecord, p: &Partition) -> bool {
        let now = now_ms();
        let mut last = self.last_sweep.lock();
        // The first pass after gaining the leadership waits one interval too: a
        // former leader's last upload may still be on its way to the quorum.
        let since = *last.entry((rec.id, p.index)).or_insert(now);
        if now.saturating_sub(since) < self.orphan_sweep_interval_ms {
            return false;
        }
        last.insert((rec.id, p.index), now);
        true
    }

    /// Deletes the objects under the partition's prefix that the committed remote
    /// log does not list and that are older than the grace period (see `sweeper`).
    pub(crate) async fn sweep_orphans(&self, rec: &TopicRecord, p: &Partition) {
        let prefix = uploader::partition_prefix(&rec.name, &rec.id, p.index);
        // Listed before the committed state is read: see the sweeper's docs.
        let listed = match self.store.list_objects(&prefix).await {
            Ok(l) => l,
            Err(e) => {
                warn!(%prefix, error = %e, "cannot list the partition's objects to sweep orphans; will retry");
                return;
            }
        };
        let committed = self.remote_log(&rec.id, p);
        let orphans = sweeper::orphans(&listed, &committed, now_ms(), self.orphan_grace_ms);
        let mut deleted = 0u64;
        for key in &orphans {
            match self.store.delete(key).await {
                Ok(()) => deleted += 1,
                Err(e) => warn!(%key, error = %e, "cannot delete an orphaned object; will retry"),
            }
        }
        if deleted > 0 {
            self.metrics
                .orphans_deleted
                .add(deleted, &Metrics::topic(&rec.name));
            info!(topic = %rec.name, partition = p.index, objects = deleted,
                "deleted objects no committed remote segment lists");
        }
    }

    /// Drops the sweep times of partitions no longer led here (`led`: the tiered
    /// partitions this pass found led here), so a leadership regained later waits a
    /// full interval again.
    fn forget_swept_partitions(&self, led: &std::collections::HashSet<(Uuid, i32)>) {
        self.last_sweep.lock().retain(|k, _| led.contains(k));
    }

    async fn publish_manifest(&self, rec: &TopicRecord, p: &Partition) {
        if let Err(e) =
            uploader::publish_manifest(&self.store, &*self.catalog, &rec.name, &rec.id, p.index)
                .await
        {
            warn!(topic = %rec.name, partition = p.index, error = %e, "cannot copy the remote log manifest to the tier");
        }
    }

    /// Hands a `remote-manifest.json` left in the partition directory by a broker
    /// version that kept the remote log there over to the quorum (when the quorum
    /// knows nothing remote for the partition yet), then renames it `*.migrated`.
    async fn migrate_manifest_file(&self, rec: &TopicRecord, p: &Partition) {
        let path = p.dir().join(MANIFEST_FILE);
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read a former remote manifest");
                return;
            }
        };
        let done = path.with_extension("json.migrated");
        let legacy: RemoteLog = match serde_json::from_slice(&raw) {
            Ok(m) => m,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring an unreadable former remote manifest");
                let _ = std::fs::rename(&path, path.with_extension("json.unreadable"));
                return;
            }
        };
        let current = self.remote_log(&rec.id, p);
        if current.is_pristine() && !legacy.is_pristine() {
            let cmd = Command::AdoptRemoteLog {
                topic: rec.name.clone(),
                topic_id: rec.id,
                partition: p.index,
                leader_epoch: p.leader_epoch(),
                log: legacy.clone(),
            };
            if let Err(e) = self.catalog.propose(cmd).await {
                warn!(topic = %rec.name, partition = p.index, error = %e, "cannot migrate the remote manifest to the quorum yet");
                return;
            }
            info!(topic = %rec.name, partition = p.index, segments = legacy.segments().len(),
                end = ?legacy.end_offset(), "migrated the remote manifest into the metadata quorum");
        } else if *current != legacy {
            warn!(topic = %rec.name, partition = p.index,
                "the metadata quorum already records the remote log; ignoring the former manifest file");
        }
        if let Err(e) = std::fs::rename(&path, &done) {
            warn!(path = %path.display(), error = %e, "cannot rename the migrated remote manifest");
        }
    }

    /// Applies `retention.ms|bytes` to the remote copy: the quorum drops the expired
    /// segments first (readers stop finding them), then the objects are deleted.
    async fn expire_remote(&self, rec: &TopicRecord, p: &Partition, remote: &RemoteLog) {
        let cfg = p.log_config();
        // Segments wholly below where DeleteRecords put the log start go too, and the
        // remote log records that start for any later leader.
        let floor = deleted_below(remote, p);
        let deleted = remote
            .segments()
            .iter()
            .take_while(|s| s.end_offset <= floor)
            .last()
            .map(|s| s.end_offset);
        let log_start = (floor > remote.deleted_below()).then_some(floor);
        let retained = if cfg.retention_ms < 0 && cfg.retention_bytes < 0 {
            None
        } else {
            // Local bytes the tier does not hold yet count towards the total too.
            let end = remote.end_offset().unwrap_or(i64::MIN);
            let uploaded_local: u64 = p
                .closed_segments()
                .iter()
                .filter(|s| s.end_offset <= end)
                .map(|s| s.size_bytes)
                .sum();
            let local_only = p.size_bytes().saturating_sub(uploaded_local);
            remote.expiry_point(now_ms(), cfg.retention_ms, cfg.retention_bytes, local_only)
        };
        let through = match retained.max(deleted) {
            Some(through) => through,
            None if log_start.is_some() => i64::MIN,
            None => return,
        };
        let cmd = Command::ExpireRemoteSegments {
            topic: rec.name.clone(),
            topic_id: rec.id,
            partition: p.index,
            leader_epoch: p.leader_epoch(),
            through,
            log_start,
        };
        if let Err(e) = self.catalog.propose(cmd).await {
            warn!(topic = %rec.name, partition = p.index, error = %e, "cannot commit remote retention; will retry");
            return;
        }
        self.publish_manifest(rec, p).await;
        let removed: Vec<_> = remote
            .segments()
            .iter()
            .filter(|s| s.end_offset <= through)
            .collect();
        // Counted once the quorum dropped them; the objects follow.
        self.metrics
            .remote_segments_deleted
            .add(removed.len() as u64, &Metrics::topic(&rec.name));
        for seg in &removed {
            for key in seg.keys() {
                if let Err(e) = self.store.delete(&key).await {
                    warn!(%key, error = %e, "cannot delete an expired remote object; it is orphaned");
                }
            }
            info!(topic = %rec.name, partition = p.index, base = seg.base_offset, end = seg.end_offset,
                "deleted remote segment (total retention or DeleteRecords)");
        }
    }

    /// Removes the remote prefixes of deleted topics the quorum lists (on the
    /// controller), forgetting each once it is gone; retried on later passes while the
    /// object store is unreachable. Also drains markers of the former local scheme.
    async fn remove_deleted_topics(&self) {
        if self.catalog.removes_deleted_topics() {
            let pending = self.catalog.state().remote_deletions.clone();
            for (id, name) in pending {
                let prefix = topic_prefix(&name, &id);
                match self.store.delete_prefix(&prefix).await {
                    Ok(n) => {
                        info!(%prefix, objects = n, "deleted the remote data of a deleted topic");
                        if let Err(e) = self
                            .catalog
                            .propose(Command::ForgetRemoteTopic { topic_id: id })
                            .await
                        {
                            warn!(%prefix, error = %e, "cannot record the removal of a deleted topic's remote data");
                        }
                    }
                    Err(e) => {
                        warn!(%prefix, error = %e, "cannot delete a deleted topic's remote data yet; will retry")
                    }
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.pending_deletes) else {
            return;
        };
        for e in entries.flatten() {
            let marker = e.path();
            let Ok(prefix) = std::fs::read_to_string(&marker) else {
                continue;
            };
            if !is_topic_prefix(&prefix) {
                warn!(marker = %marker.display(), "ignoring a malformed pending-deletion marker");
                let _ = std::fs::remove_file(&marker);
                continue;
            }
            match self.store.delete_prefix(&prefix).await {
                Ok(n) => {
                    info!(%prefix, objects = n, "deleted the remote data of a deleted topic");
                    let _ = std::fs::remove_file(&marker);
                }
                Err(e) => {
                    warn!(%prefix, error = %e, "cannot delete a deleted topic's remote data yet; will retry")
                }
            }
        }
    }

    /// Directory of pending topic deletions of the former local scheme.
    pub fn pending_deletes_dir(&self) -> &Path {
        &self.pending_deletes
    }
}

/// Below this offset DeleteRecords removed the records, as this replica knows it or
/// as the quorum recorded it for the remote log (which outlives leader changes).
pub fn deleted_below(remote: &RemoteLog, p: &Partition) -> i64 {
    remote.deleted_below().max(p.deleted_below())
}

/// Object key prefix of a whole topic (every partition's prefix is under it).
pub fn topic_prefix(topic: &str, topic_id: &Uuid) -> String {
    format!("{topic}-{}", topic_id.simple())
}

/// A prefix names exactly one topic: `<name>-<32 hex digits>`, nothing above it.
fn is_topic_prefix(prefix: &str) -> bool {
    match prefix.rsplit_once('-') {
        Some((name, id)) => {
            !name.is_empty()
                && !prefix.contains('/')
                && id.len() == 32
                && id.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// The log start offset of a tiered partition. Uploads begin at the oldest local
/// segment and local copies are deleted only once uploaded, so the remote log's start
/// is the log's start: lower than the local start when the tier holds older data, and
/// higher when total retention has just removed the oldest segments from the tier
/// while local retention, on its own schedule, has not yet deleted their local copies
/// (as in Kafka, retention moves the log start at once; the files go later). With
/// every remote segment expired, what retention reached bounds the start.
pub fn log_start(remote: &RemoteLog, local_start: i64) -> i64 {
    match (remote.start_offset(), remote.end_offset()) {
        (Some(start), _) => start,
        (None, Some(expired)) => local_start.max(expired),
        (None, None) => local_start,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod migration_tests;

#[cfg(test)]
mod delete_records_tests;
