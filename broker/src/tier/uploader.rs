//! The tier uploader: copies each closed segment of a remote-storage-enabled topic
//! (log, indexes and producer snapshot) to the object store and then commits it to
//! the partition's remote manifest. Uploads are idempotent (same key, same bytes) and
//! strictly in offset order, so the remote log never has a gap; a failed upload is
//! retried on the next pass.
//! Local copies are deleted by retention only once committed here (see
//! `log::retention`).

use std::fs;
use std::path::Path;

use bytes::Bytes;
use tracing::{info, warn};

use super::manifest::{RemoteManifest, RemoteSegment};
use super::store::TierStore;
use crate::partition::Partition;

/// File name of a partition's remote manifest.
pub const MANIFEST_FILE: &str = "remote-manifest.json";

/// Object key stem of a partition: `<topic>-<topic id>/<partition>`; the topic id
/// keeps a re-created topic of the same name apart.
pub fn partition_prefix(topic: &str, topic_id: &uuid::Uuid, partition: i32) -> String {
    format!("{topic}-{}/{partition}", topic_id.simple())
}

/// Outcome of one pass over one partition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub uploaded_segments: usize,
    pub uploaded_bytes: u64,
    /// Closed segments still waiting (after an error, or behind one).
    pub pending_segments: usize,
}

async fn read_file(path: &Path) -> std::io::Result<Option<Bytes>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Uploads every closed segment of `partition` not yet in `manifest` (its committed
/// manifest, saved in the partition directory after each commit).
pub async fn upload_partition(
    store: &TierStore,
    partition: &Partition,
    topic_id: &uuid::Uuid,
    leader_epoch: i32,
    manifest: &mut RemoteManifest,
) -> anyhow::Result<PassReport> {
    let dir = partition.dir();
    let manifest_path = dir.join(MANIFEST_FILE);
    let prefix = partition_prefix(&partition.topic, topic_id, partition.index);
    let closed = partition.closed_segments();
    let mut report = PassReport::default();
    let todo: Vec<_> = closed
        .into_iter()
        .filter(|s| manifest.end_offset().is_none_or(|end| s.base_offset >= end))
        .collect();
    report.pending_segments = todo.len();
    for seg in todo {
        if let Some(end) = manifest.end_offset() {
            if seg.base_offset != end {
                warn!(topic = %partition.topic, partition = partition.index, expected = end, found = seg.base_offset,
                    "local segments do not continue the remote log; not uploading past the gap");
                break;
            }
        }
        let stem = format!("{prefix}/{:020}", seg.base_offset);
        let log_key = format!("{stem}.log");
        let Some(log) = read_file(&seg.log).await? else {
            // Deleted by retention between listing and reading.
            continue;
        };
        // The file may have grown only if it were active; closed segments never do,
        // but cut to the size we listed to be exact.
        let log = log.slice(..(seg.size_bytes as usize).min(log.len()));
        store.put(&log_key, log.clone()).await?;
        for (path, ext) in [
            (&seg.index, "index"),
            (&seg.time_index, "timeindex"),
            (&seg.producer_snapshot, "snapshot"),
        ] {
            if let Some(data) = read_file(path).await? {
                store.put(&format!("{stem}.{ext}"), data).await?;
            }
        }
        let committed = manifest.commit(RemoteSegment {
            base_offset: seg.base_offset,
            end_offset: seg.end_offset,
            max_timestamp: seg.max_timestamp,
            size_bytes: seg.size_bytes,
            leader_epoch,
            log_key,
        })?;
        if committed {
            manifest.save(&manifest_path)?;
            report.uploaded_segments += 1;
            report.uploaded_bytes += seg.size_bytes;
            report.pending_segments -= 1;
        }
    }
    if report.uploaded_segments > 0 {
        publish_manifest(store, partition, topic_id, &manifest_path).await?;
        info!(topic = %partition.topic, partition = partition.index, segments = report.uploaded_segments,
            bytes = report.uploaded_bytes, "uploaded segments to the tier");
    }
    Ok(report)
}

/// Copies the manifest next to the data, which keeps the tier self-describing.
pub async fn publish_manifest(
    store: &TierStore,
    partition: &Partition,
    topic_id: &uuid::Uuid,
    manifest_path: &Path,
) -> anyhow::Result<()> {
    let prefix = partition_prefix(&partition.topic, topic_id, partition.index);
    let raw = fs::read(manifest_path)?;
    store
        .put(&format!("{prefix}/{MANIFEST_FILE}"), Bytes::from(raw))
        .await?;
    Ok(())
}

/// The partition's committed remote manifest.
pub fn manifest_of(partition: &Partition) -> std::io::Result<RemoteManifest> {
    RemoteManifest::load(&partition.dir().join(MANIFEST_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogConfig, PartitionLog, ValidatedRecords};
    use crate::tier::store::TierBackend;
    use std::sync::Arc;

    fn batch(i: i64) -> Vec<u8> {
        crate::log::batch::tests::make_batch(0, 5, 1000 + i, &[i as u8; 200])
    }

    #[tokio::test]
    async fn closed_segments_are_uploaded_once_in_order_and_resume_after_restart() {
        let data = tempfile::tempdir().unwrap();
        let tier = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&data.path().join("t-0"), cfg.clone(), true, 0).unwrap();
        let p = Partition::standalone(Arc::from("t"), 0, log);
        for i in 0..60 {
            p.append(ValidatedRecords::new(&batch(i), 1 << 20).unwrap(), 0)
                .unwrap();
        }
        let store = TierStore::new(
            &TierBackend::Local {
                dir: tier.path().to_path_buf(),
            },
            "",
        )
        .unwrap();
        let id = uuid::Uuid::new_v4();
        let closed = p.closed_segments();
        assert!(closed.len() >= 3);
        let mut m = manifest_of(&p).unwrap();
        let r = upload_partition(&store, &p, &id, 0, &mut m).await.unwrap();
        assert_eq!(r.uploaded_segments, closed.len());
        assert_eq!(r.pending_segments, 0);
        // A second pass uploads nothing new.
        assert_eq!(
            upload_partition(&store, &p, &id, 0, &mut m)
                .await
                .unwrap()
                .uploaded_segments,
            0
        );
        let m = manifest_of(&p).unwrap();
        assert_eq!(m.start_offset(), Some(0));
        assert_eq!(m.end_offset(), Some(closed.last().unwrap().end_offset));
        // Bytes in the tier are the local segment bytes, verbatim.
        let first = &m.segments()[0];
        let remote = store.get(&first.log_key).await.unwrap();
        assert_eq!(remote.as_ref(), &std::fs::read(&closed[0].log).unwrap()[..]);
        assert!(store.get(&first.index_key()).await.is_ok());
        // More data, a "restart" (fresh Partition over the same dir): upload resumes.
        for i in 60..90 {
            p.append(ValidatedRecords::new(&batch(i), 1 << 20).unwrap(), 0)
                .unwrap();
        }
        drop(p);
        let log = PartitionLog::open(&data.path().join("t-0"), cfg, false, 0).unwrap();
        let p = Partition::standalone(Arc::from("t"), 0, log);
        let mut m2 = manifest_of(&p).unwrap();
        let r = upload_partition(&store, &p, &id, 0, &mut m2).await.unwrap();
        assert!(r.uploaded_segments > 0);
        let m2 = manifest_of(&p).unwrap();
        assert!(m2
            .segments()
            .windows(2)
            .all(|w| w[0].end_offset == w[1].base_offset));
        assert_eq!(m2.segments()[..m.segments().len()], m.segments()[..]);
        let keys = store.list(&partition_prefix("t", &id, 0)).await.unwrap();
        assert!(keys.iter().any(|k| k.ends_with(MANIFEST_FILE)));
    }
}
