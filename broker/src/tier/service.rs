//! The tier as the broker sees it: the object store, the chunk cache, the committed
//! manifest of every tiered partition (cached in memory, the file in the partition
//! directory being the source of truth) and the periodic pass that uploads closed
//! segments, applies total retention to the remote copy and removes the prefixes of
//! deleted topics.
//!
//! Order within a pass matters for safety: a segment is uploaded, committed to the
//! manifest file, published to the in-memory manifest readers use, and only then is
//! the partition told that the tier reaches that far, which is what allows local
//! retention to delete the local copy. A reader therefore never finds a gap between
//! the remote and the local log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{info, warn};
use uuid::Uuid;

use super::cache::{ChunkCache, Lru};
use super::manifest::RemoteManifest;
use super::metrics::TierMetrics;
use super::store::{TierBackend, TierStore};
use super::uploader::{self, MANIFEST_FILE};
use crate::broker::{now_ms, Broker};
use crate::config::BrokerConfig;
use crate::log::index::OffsetEntry;
use crate::metadata::{topic_config, TopicRecord};
use crate::partition::Partition;
use crate::telemetry::Metrics;

/// Bytes of decoded remote offset indexes kept in memory.
const INDEX_CACHE_BYTES: u64 = 32 << 20;

pub struct Tier {
    pub store: TierStore,
    pub(super) cache: Arc<ChunkCache>,
    /// Decoded offset indexes of remote segments, by object key.
    pub(super) indexes: Mutex<Lru<Arc<str>, Arc<Vec<OffsetEntry>>>>,
    pub(super) read_ahead: u32,
    pub metrics: TierMetrics,
    manifests: Mutex<HashMap<(Uuid, i32), Arc<RemoteManifest>>>,
    /// Marker files of deleted topics whose remote prefix is still to be removed.
    pending_deletes: PathBuf,
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
        std::fs::create_dir_all(&pending_deletes)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", pending_deletes.display()))?;
        Ok(Arc::new(Tier {
            store,
            cache: Arc::new(cache),
            indexes: Mutex::new(Lru::new(INDEX_CACHE_BYTES)),
            read_ahead: config.tier_read_ahead_chunks,
            metrics: tm,
            manifests: Mutex::new(HashMap::new()),
            pending_deletes,
        }))
    }

    /// The committed manifest of a partition (empty when nothing was uploaded).
    pub fn manifest(&self, topic_id: &Uuid, p: &Partition) -> Arc<RemoteManifest> {
        let key = (*topic_id, p.index);
        if let Some(m) = self.manifests.lock().get(&key) {
            return Arc::clone(m);
        }
        let m = match RemoteManifest::load(&p.dir().join(MANIFEST_FILE)) {
            Ok(m) => m,
            Err(e) => {
                warn!(topic = %p.topic, partition = p.index, error = %e, "cannot read the remote manifest");
                return Arc::new(RemoteManifest::default());
            }
        };
        let m = Arc::new(m);
        self.manifests.lock().insert(key, Arc::clone(&m));
        m
    }

    fn publish(&self, topic_id: &Uuid, p: &Partition, m: RemoteManifest) {
        self.manifests
            .lock()
            .insert((*topic_id, p.index), Arc::new(m));
    }

    /// The first offset a client can read: the tier's start when it holds older data
    /// than local disk.
    pub fn log_start_offset(&self, topic_id: &Uuid, p: &Partition, local_start: i64) -> i64 {
        match self.manifest(topic_id, p).start_offset() {
            Some(s) if s < local_start => s,
            _ => local_start,
        }
    }

    /// One pass: remote prefixes of deleted topics, then for every tiered partition
    /// upload, local-deletion bound, total retention of the remote copy and upload lag.
    pub async fn run_pass(&self, broker: &Broker) {
        self.remove_deleted_topics().await;
        for t in broker.all_topics() {
            if t.record.internal
                || !topic_config::remote_storage_enabled(&t.record.configs, &broker.config)
            {
                continue;
            }
            // The leader uploads and manages the remote copy.
            for p in t.local().filter(|p| p.is_leader()) {
                self.pass_partition(&t.record, p).await;
            }
        }
    }

    pub(crate) async fn pass_partition(&self, rec: &TopicRecord, p: &Partition) {
        let labels = Metrics::topic(&rec.name);
        let mut manifest = (*self.manifest(&rec.id, p)).clone();
        match uploader::upload_partition(&self.store, p, &rec.id, p.leader_epoch(), &mut manifest)
            .await
        {
            Ok(r) => {
                self.metrics
                    .uploaded_segments
                    .add(r.uploaded_segments as u64, &labels);
                self.metrics.uploaded_bytes.add(r.uploaded_bytes, &labels);
            }
            Err(e) => {
                self.metrics.upload_errors.add(1, &labels);
                warn!(topic = %rec.name, partition = p.index, error = %e, "tier upload failed; will retry");
                // What was committed before the error is on disk; re-read it.
                manifest = RemoteManifest::load(&p.dir().join(MANIFEST_FILE))
                    .unwrap_or_else(|_| (*self.manifest(&rec.id, p)).clone());
            }
        }
        let end = manifest.end_offset();
        self.publish(&rec.id, p, manifest.clone());
        if let Some(end) = end {
            p.set_remote_end_offset(end);
        }
        self.expire_remote(rec, p, manifest).await;
        let closed = p.closed_segments();
        let waiting: Vec<_> = closed
            .iter()
            .filter(|s| end.is_none_or(|e| s.base_offset >= e))
            .collect();
        let plabels = TierMetrics::partition(&rec.name, p.index);
        self.metrics
            .upload_lag_segments
            .record(waiting.len() as u64, &plabels);
        self.metrics
            .upload_lag_bytes
            .record(waiting.iter().map(|s| s.size_bytes).sum(), &plabels);
    }

    /// Applies `retention.ms|bytes` to the remote copy: the manifest loses the expired
    /// segments first (readers stop finding them), then the objects are deleted.
    async fn expire_remote(&self, rec: &TopicRecord, p: &Partition, mut manifest: RemoteManifest) {
        let cfg = p.log_config();
        if cfg.retention_ms < 0 && cfg.retention_bytes < 0 {
            return;
        }
        // Local bytes the tier does not hold yet count towards the total too.
        let end = manifest.end_offset().unwrap_or(i64::MIN);
        let uploaded_local: u64 = p
            .closed_segments()
            .iter()
            .filter(|s| s.end_offset <= end)
            .map(|s| s.size_bytes)
            .sum();
        let local_only = p.size_bytes().saturating_sub(uploaded_local);
        let removed = manifest.expire(now_ms(), cfg.retention_ms, cfg.retention_bytes, local_only);
        if removed.is_empty() {
            return;
        }
        let path = p.dir().join(MANIFEST_FILE);
        if let Err(e) = manifest.save(&path) {
            warn!(topic = %rec.name, partition = p.index, error = %e, "cannot save the manifest after retention");
            return;
        }
        self.publish(&rec.id, p, manifest);
        if let Err(e) = uploader::publish_manifest(&self.store, p, &rec.id, &path).await {
            warn!(topic = %rec.name, partition = p.index, error = %e, "cannot copy the manifest to the tier");
        }
        for seg in &removed {
            for key in [
                seg.log_key.clone(),
                seg.index_key(),
                seg.time_index_key(),
                seg.snapshot_key(),
            ] {
                if let Err(e) = self.store.delete(&key).await {
                    warn!(%key, error = %e, "cannot delete an expired remote object; it is orphaned");
                }
            }
            info!(topic = %rec.name, partition = p.index, base = seg.base_offset, end = seg.end_offset,
                "total retention deleted remote segment");
        }
        self.metrics
            .remote_segments_deleted
            .add(removed.len() as u64, &Metrics::topic(&rec.name));
    }

    /// Records that a deleted topic's remote prefix must go; the next pass removes
    /// it (and retries until the object store lets it).
    pub fn schedule_topic_deletion(&self, rec: &TopicRecord) {
        self.manifests.lock().retain(|(id, _), _| *id != rec.id);
        let prefix = topic_prefix(&rec.name, &rec.id);
        let marker = self.pending_deletes.join(rec.id.simple().to_string());
        if let Err(e) = std::fs::write(&marker, &prefix) {
            warn!(topic = %rec.name, error = %e, "cannot record the pending deletion of the topic's remote data");
        }
    }

    async fn remove_deleted_topics(&self) {
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

    /// Directory of pending topic deletions (for tests).
    pub fn pending_deletes_dir(&self) -> &Path {
        &self.pending_deletes
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_topic_prefixes_are_deleted() {
        let id = Uuid::new_v4();
        assert!(is_topic_prefix(&topic_prefix("orders", &id)));
        assert!(is_topic_prefix(&topic_prefix("a-b-c", &id)));
        assert!(!is_topic_prefix(""));
        assert!(!is_topic_prefix("orders"));
        assert!(!is_topic_prefix(&format!(
            "x/{}",
            topic_prefix("orders", &id)
        )));
        assert!(
            uploader::partition_prefix("orders", &id, 3).starts_with(&topic_prefix("orders", &id))
        );
    }
}
