//! The tier uploader: copies closed segments of a remote-storage-enabled partition
//! (log, indexes and producer snapshot) to the object store and commits each through
//! the metadata quorum, strictly in offset order starting at the committed remote
//! end offset, so the remote log never has a gap or an overlap — also across a change
//! of leader: a new leader's segments need not start where the old leader's did (each
//! replica rolls its own segments), so the first upload after a failover is cut to
//! start exactly at the remote end offset.
//!
//! Object keys are `<prefix>/<base offset>-<leader epoch>.<ext>`: a retried or
//! duplicated upload by the same leader overwrites the same keys (idempotent), and a
//! deposed leader that still uploads can never overwrite what a newer leader
//! committed. Only data below the high watermark is uploaded, so the tier never holds
//! records a new leader might not have.
//! Local copies are deleted by retention only once committed (see `log::retention`).

use bytes::Bytes;
use tracing::{info, warn};
use uuid::Uuid;

use super::catalog::{self, Catalog};
use super::store::TierStore;
use crate::log::batch;
use crate::log::index::{self, Entry, OffsetEntry, TimeEntry};
use crate::log::ClosedSegment;
use crate::metadata::cluster::Command;
use crate::metadata::remote_log::RemoteSegment;
use crate::partition::Partition;

/// Name of the self-describing copy of the committed remote log kept in the bucket
/// (and of the former per-partition manifest file, migrated at startup).
pub const MANIFEST_FILE: &str = "remote-manifest.json";

/// Object key stem of a partition: `<topic>-<topic id>/<partition>`; the topic id
/// keeps a re-created topic of the same name apart.
pub fn partition_prefix(topic: &str, topic_id: &Uuid, partition: i32) -> String {
    format!("{topic}-{}/{partition}", topic_id.simple())
}

/// Object key of the data of a remote segment starting at `base`, uploaded by
/// `leader_epoch`.
pub fn segment_log_key(prefix: &str, base: i64, leader_epoch: i32) -> String {
    format!("{prefix}/{base:020}-{leader_epoch}.log")
}

/// Outcome of one pass over one partition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub uploaded_segments: usize,
    pub uploaded_bytes: u64,
    /// Closed segments still waiting (after an error, or behind one).
    pub pending_segments: usize,
}

/// What the uploader does next, given the local closed segments and the committed
/// remote end offset.
#[derive(Debug, PartialEq, Eq)]
pub enum NextUpload<'a> {
    /// Upload `segment` from offset `from` (its base offset, or the remote end inside it).
    Segment {
        segment: &'a ClosedSegment,
        from: i64,
    },
    /// Nothing closed below the last stable offset continues the remote log yet.
    Nothing,
    /// The local log starts after the remote end: the replica lacks the data between.
    Gap { remote_end: i64, local_start: i64 },
}

/// Picks the next upload: the closed segment holding `remote_end` (the first closed
/// segment when nothing was ever remote), if it lies wholly below `stable_end`: the
/// last stable offset, which never passes the high watermark, so what is uploaded is
/// replicated and every transaction with records in it is decided (its aborted
/// transactions go with it).
pub fn next_upload(
    closed: &[ClosedSegment],
    remote_end: Option<i64>,
    stable_end: i64,
) -> NextUpload<'_> {
    let found = match remote_end {
        None => closed.first().map(|s| (s, s.base_offset)),
        Some(end) => {
            if closed.first().is_some_and(|s| s.base_offset > end) {
                return NextUpload::Gap {
                    remote_end: end,
                    local_start: closed[0].base_offset,
                };
            }
            closed
                .iter()
                .find(|s| s.base_offset <= end && end < s.end_offset)
                .map(|s| (s, end))
        }
    };
    match found {
        Some((segment, from)) if segment.end_offset <= stable_end => {
            NextUpload::Segment { segment, from }
        }
        _ => NextUpload::Nothing,
    }
}

async fn read_file(path: &std::path::Path) -> std::io::Result<Option<Bytes>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The objects of one segment upload, cut to start at `from`.
struct Upload {
    log: Bytes,
    index: Option<Bytes>,
    time_index: Option<Bytes>,
    max_timestamp: i64,
}

/// Cuts a segment's data and indexes to start at offset `from` (a batch boundary,
/// since both are batch boundaries of the same replicated log).
fn cut(
    seg: &ClosedSegment,
    from: i64,
    log: Bytes,
    index: Option<Bytes>,
    time_index: Option<Bytes>,
) -> anyhow::Result<Upload> {
    if from == seg.base_offset {
        return Ok(Upload {
            log,
            index,
            time_index,
            max_timestamp: seg.max_timestamp,
        });
    }
    info!(
        segment = seg.base_offset,
        from, "cutting a local segment to continue the remote log"
    );
    let mut start = None;
    let mut max_timestamp = -1;
    for (h, pos) in batch::headers(&log) {
        if h.base_offset == from {
            start = Some(pos);
        }
        if start.is_some() {
            max_timestamp = max_timestamp.max(h.max_timestamp);
        }
    }
    let Some(pos) = start else {
        anyhow::bail!(
            "remote end offset {from} is not a batch boundary of local segment {}",
            seg.base_offset
        );
    };
    let rel = u32::try_from(from - seg.base_offset)?;
    let pos32 = u32::try_from(pos)?;
    let offsets = index
        .as_deref()
        .and_then(index::parse_entries::<OffsetEntry>)
        .unwrap_or_default();
    let times = time_index
        .as_deref()
        .and_then(index::parse_entries::<TimeEntry>)
        .unwrap_or_default();
    let (offsets, times) = slice_indexes(&offsets, &times, rel, pos32);
    Ok(Upload {
        log: log.slice(pos..),
        index: Some(encode(&offsets)),
        time_index: Some(encode(&times)),
        max_timestamp,
    })
}

fn encode<E: Entry>(entries: &[E]) -> Bytes {
    let mut out = Vec::with_capacity(entries.len() * E::SIZE);
    for e in entries {
        e.encode(&mut out);
    }
    Bytes::from(out)
}

/// The index entries of a segment cut at relative offset `rel` / byte `pos`,
/// rebased so the cut is offset 0 at position 0 (which is always indexed, as in a
/// segment of its own).
pub fn slice_indexes(
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
    rel: u32,
    pos: u32,
) -> (Vec<OffsetEntry>, Vec<TimeEntry>) {
    let mut o = vec![OffsetEntry {
        relative_offset: 0,
        position: 0,
    }];
    o.extend(offsets.iter().filter_map(|e| {
        Some(OffsetEntry {
            relative_offset: e.relative_offset.checked_sub(rel)?,
            position: e.position.checked_sub(pos)?,
        })
        .filter(|e| e.relative_offset > 0 && e.position > 0)
    }));
    let t = times
        .iter()
        .filter_map(|e| {
            Some(TimeEntry {
                timestamp: e.timestamp,
                relative_offset: e.relative_offset.checked_sub(rel)?,
            })
        })
        .collect();
    (o, t)
}

/// Uploads and commits closed segments of `partition` continuing its committed remote
/// log, while this broker leads at `leader_epoch`.
pub async fn upload_partition(
    store: &TierStore,
    catalog: &dyn Catalog,
    partition: &Partition,
    topic_id: &Uuid,
    leader_epoch: i32,
) -> anyhow::Result<PassReport> {
    let topic = partition.topic.to_string();
    let prefix = partition_prefix(&topic, topic_id, partition.index);
    let closed = partition.closed_segments();
    let mut report = PassReport::default();
    let Some(remote) = catalog::remote_log(&catalog.state(), &topic, topic_id, partition.index)
    else {
        return Ok(report);
    };
    let mut end = remote.end_offset();
    report.pending_segments = closed
        .iter()
        .filter(|s| end.is_none_or(|e| s.end_offset > e))
        .count();
    loop {
        let (seg, from) = match next_upload(&closed, end, partition.last_stable_offset()) {
            NextUpload::Segment { segment, from } => (segment, from),
            NextUpload::Nothing => break,
            NextUpload::Gap {
                remote_end,
                local_start,
            } => {
                warn!(%topic, partition = partition.index, remote_end, local_start,
                    "the local log starts after the remote log ends; not uploading past the gap");
                break;
            }
        };
        let Some(log) = read_file(&seg.log).await? else {
            // Deleted by retention between listing and reading.
            break;
        };
        // Closed segments never grow; cut to the size listed to be exact.
        let log = log.slice(..(seg.size_bytes as usize).min(log.len()));
        let up = cut(
            seg,
            from,
            log,
            read_file(&seg.index).await?,
            read_file(&seg.time_index).await?,
        )?;
        let log_key = segment_log_key(&prefix, from, leader_epoch);
        let segment = RemoteSegment {
            base_offset: from,
            end_offset: seg.end_offset,
            max_timestamp: up.max_timestamp,
            size_bytes: up.log.len() as u64,
            leader_epoch,
            log_key: log_key.clone(),
        };
        store.put(&log_key, up.log).await?;
        // Every transaction with records here is decided (the segment ends below the
        // last stable offset), so its aborted ones are all known now.
        let aborted = partition.aborted_transactions(from, seg.end_offset);
        let txn_index =
            (!aborted.is_empty()).then(|| Bytes::from(crate::log::txn_index::encode(&aborted)));
        for (data, key) in [
            (txn_index, segment.txn_index_key()),
            (up.index, segment.index_key()),
            (up.time_index, segment.time_index_key()),
            (
                read_file(&seg.producer_snapshot).await?,
                segment.snapshot_key(),
            ),
        ] {
            if let Some(data) = data {
                store.put(&key, data).await?;
            }
        }
        let size = segment.size_bytes;
        catalog
            .propose(Command::CommitRemoteSegment {
                topic: topic.clone(),
                topic_id: *topic_id,
                partition: partition.index,
                leader_epoch,
                segment,
            })
            .await
            .map_err(|e| anyhow::anyhow!("commit of remote segment at {from} refused: {e}"))?;
        end = Some(seg.end_offset);
        report.uploaded_segments += 1;
        report.uploaded_bytes += size;
        report.pending_segments = report.pending_segments.saturating_sub(1);
    }
    if report.uploaded_segments > 0 {
        info!(%topic, partition = partition.index, segments = report.uploaded_segments,
            bytes = report.uploaded_bytes, remote_end = ?end, "uploaded segments to the tier");
    }
    Ok(report)
}

/// Copies the committed remote log next to the data, which keeps the tier
/// self-describing (the quorum stays the source of truth).
pub async fn publish_manifest(
    store: &TierStore,
    catalog: &dyn Catalog,
    topic: &str,
    topic_id: &Uuid,
    partition: i32,
) -> anyhow::Result<()> {
    let Some(remote) = catalog::remote_log(&catalog.state(), topic, topic_id, partition) else {
        return Ok(());
    };
    let raw = serde_json::to_vec_pretty(&*remote)?;
    let prefix = partition_prefix(topic, topic_id, partition);
    store
        .put(&format!("{prefix}/{MANIFEST_FILE}"), Bytes::from(raw))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogConfig, PartitionLog, ValidatedRecords};
    use crate::metadata::TopicRecord;
    use crate::partition::Role;
    use crate::tier::catalog::LocalCatalog;
    use crate::tier::store::TierBackend;
    use std::sync::Arc;

    fn batch(i: i64) -> Vec<u8> {
        crate::log::batch::tests::make_batch(0, 5, 1000 + i, &[i as u8; 200])
    }

    fn local_store(dir: &std::path::Path) -> TierStore {
        TierStore::new(
            &TierBackend::Local {
                dir: dir.to_path_buf(),
            },
            "",
        )
        .unwrap()
    }

    fn record() -> TopicRecord {
        TopicRecord {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
            internal: false,
        }
    }

    fn replica(
        dir: &std::path::Path,
        segment_bytes: u64,
        batches: std::ops::Range<i64>,
    ) -> Partition {
        let cfg = LogConfig {
            segment_bytes,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, cfg, true, 0).unwrap();
        let p = Partition::standalone(Arc::from("t"), 0, log);
        for i in batches {
            p.append(ValidatedRecords::new(&batch(i), 1 << 20).unwrap(), 0)
                .unwrap();
        }
        p
    }

    fn remote(c: &LocalCatalog, rec: &TopicRecord) -> Arc<crate::metadata::remote_log::RemoteLog> {
        catalog::remote_log(&c.state(), "t", &rec.id, 0).unwrap()
    }

    #[tokio::test]
    async fn closed_segments_are_uploaded_once_in_order_and_committed_to_the_catalog() {
        let data = tempfile::tempdir().unwrap();
        let tier = tempfile::tempdir().unwrap();
        let p = replica(&data.path().join("t-0"), 4096, 0..60);
        let store = local_store(tier.path());
        let rec = record();
        let c = LocalCatalog::with_topic(&rec).unwrap();
        let closed = p.closed_segments();
        assert!(closed.len() >= 3);
        let r = upload_partition(&store, &c, &p, &rec.id, 0).await.unwrap();
        assert_eq!(r.uploaded_segments, closed.len());
        assert_eq!(r.pending_segments, 0);
        // A second pass uploads nothing new.
        let again = upload_partition(&store, &c, &p, &rec.id, 0).await.unwrap();
        assert_eq!(again.uploaded_segments, 0);
        let m = remote(&c, &rec);
        assert_eq!(m.start_offset(), Some(0));
        assert_eq!(m.end_offset(), Some(closed.last().unwrap().end_offset));
        // Bytes in the tier are the local segment bytes, verbatim.
        let first = &m.segments()[0];
        assert_eq!(
            first.log_key,
            segment_log_key(&partition_prefix("t", &rec.id, 0), 0, 0)
        );
        let got = store.get(&first.log_key).await.unwrap();
        assert_eq!(got.as_ref(), &std::fs::read(&closed[0].log).unwrap()[..]);
        assert!(store.get(&first.index_key()).await.is_ok());
        // So is the producer state as of its end, written when the log rolled past it.
        let snapshot = store.get(&first.snapshot_key()).await.unwrap();
        assert!(crate::producer::decode_snapshot(&snapshot, first.end_offset).is_some());
        // A stale leader epoch commits nothing.
        p.append(ValidatedRecords::new(&batch(60), 1 << 20).unwrap(), 0)
            .unwrap();
        for i in 61..90 {
            p.append(ValidatedRecords::new(&batch(i), 1 << 20).unwrap(), 0)
                .unwrap();
        }
        c.apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: 0,
        })
        .unwrap();
        assert!(upload_partition(&store, &c, &p, &rec.id, 0).await.is_err());
        assert_eq!(remote(&c, &rec).segments().len(), m.segments().len());
        // The current epoch continues where the log ends.
        let r = upload_partition(&store, &c, &p, &rec.id, 1).await.unwrap();
        assert!(r.uploaded_segments > 0);
        let m2 = remote(&c, &rec);
        assert!(m2
            .segments()
            .windows(2)
            .all(|w| w[0].end_offset == w[1].base_offset));
        assert_eq!(m2.segments()[..m.segments().len()], m.segments()[..]);
        publish_manifest(&store, &c, "t", &rec.id, 0).await.unwrap();
        let keys = store
            .list(&partition_prefix("t", &rec.id, 0))
            .await
            .unwrap();
        assert!(keys.iter().any(|k| k.ends_with(MANIFEST_FILE)));
    }

    #[tokio::test]
    async fn a_new_leader_with_other_segment_boundaries_continues_exactly_at_the_remote_end() {
        let data = tempfile::tempdir().unwrap();
        let tier = tempfile::tempdir().unwrap();
        let store = local_store(tier.path());
        let rec = record();
        let c = LocalCatalog::with_topic(&rec).unwrap();
        // The old leader rolls every 4 KiB, the replica that takes over every 7 KiB.
        let old = replica(&data.path().join("a"), 4096, 0..40);
        let new = replica(&data.path().join("b"), 7000, 0..120);
        upload_partition(&store, &c, &old, &rec.id, 0)
            .await
            .unwrap();
        let end = remote(&c, &rec).end_offset().unwrap();
        let new_closed = new.closed_segments();
        assert!(
            new_closed
                .iter()
                .any(|s| s.base_offset < end && end < s.end_offset),
            "the remote end falls inside one of the new leader's segments"
        );
        c.apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: 0,
        })
        .unwrap();
        new.set_role(Role::Leader, 1, &[0], &[0], 0);
        let r = upload_partition(&store, &c, &new, &rec.id, 1)
            .await
            .unwrap();
        assert!(r.uploaded_segments >= 2);
        let m = remote(&c, &rec);
        assert!(m
            .segments()
            .windows(2)
            .all(|w| w[0].end_offset == w[1].base_offset));
        assert_eq!(m.end_offset(), Some(new_closed.last().unwrap().end_offset));
        // The remote objects, in order, are the log byte for byte: no gap, no duplicate.
        let mut remote_bytes = Vec::new();
        for s in m.segments() {
            remote_bytes.extend_from_slice(&store.get(&s.log_key).await.unwrap());
        }
        let mut local = Vec::new();
        for s in &new_closed {
            local.extend_from_slice(&std::fs::read(&s.log).unwrap());
        }
        assert_eq!(remote_bytes, local);
        // The cut segment's index points at batch starts of its own object.
        let cut = m.find(end).unwrap();
        assert_eq!(cut.base_offset, end);
        let raw = store.get(&cut.index_key()).await.unwrap();
        let entries = index::parse_entries::<OffsetEntry>(&raw).unwrap();
        let data = store.get(&cut.log_key).await.unwrap();
        let starts: Vec<(i64, usize)> = batch::headers(&data)
            .map(|(h, pos)| (h.base_offset - cut.base_offset, pos))
            .collect();
        assert!(entries.len() > 1);
        for e in entries {
            assert!(
                starts.contains(&(i64::from(e.relative_offset), e.position as usize)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_next_upload_continues_the_remote_end_below_the_high_watermark() {
        let seg = |b: i64, e: i64| ClosedSegment {
            base_offset: b,
            end_offset: e,
            max_timestamp: 0,
            size_bytes: 1,
            log: Default::default(),
            index: Default::default(),
            time_index: Default::default(),
            producer_snapshot: Default::default(),
        };
        let closed = [seg(10, 20), seg(20, 30)];
        let pick = |end, hw| match next_upload(&closed, end, hw) {
            NextUpload::Segment { segment, from } => Some((segment.base_offset, from)),
            NextUpload::Nothing => None,
            NextUpload::Gap { .. } => Some((-1, -1)),
        };
        assert_eq!(pick(None, 100), Some((10, 10)));
        assert_eq!(pick(Some(20), 100), Some((20, 20)));
        assert_eq!(pick(Some(25), 100), Some((20, 25)));
        assert_eq!(
            pick(Some(30), 100),
            None,
            "the active segment is not uploaded"
        );
        assert_eq!(pick(Some(20), 29), None, "not above the high watermark");
        assert_eq!(pick(Some(5), 100), Some((-1, -1)));
    }
}
