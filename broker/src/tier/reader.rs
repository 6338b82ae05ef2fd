//! The remote read path: Fetch and ListOffsets below the local log start are answered
//! from the tier. The partition's remote log, as committed in the metadata quorum,
//! names the remote segment; its uploaded offset (or time) index says where in the
//! object to start; the bytes come through
//! the chunk cache as ranged GETs, with read-ahead of the following chunks so a
//! consumer catching up streams instead of waiting for each GET.
//!
//! What is served is whole record batches, byte for byte as stored. Every batch is
//! checked (length, magic, CRC32C, offsets continuing the previous batch) before it
//! leaves, so a damaged or truncated object becomes a clear per-partition error rather
//! than garbage at the client.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use opentelemetry::KeyValue;
use tracing::warn;

// `kafka::fetch` imports the error from here.
pub use super::error::TierReadError;
use super::service::Tier;
use crate::log::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::log::index::{self, OffsetEntry, TimeEntry};
use crate::metadata::remote_log::{RemoteLog, RemoteSegment};
use crate::partition::Partition;

/// Longest a fetch waits for the tier, well inside clients' request timeout (30 s).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Outcome of a fetch that fell below the local log start.
#[derive(Debug)]
pub enum RemoteFetch {
    /// Whole batches starting with the one holding the offset.
    Records(Bytes),
    /// The offset is not in the tier either (expired, or never tiered).
    OutOfRange,
}

impl Tier {
    /// Serves a fetch of `offset` (below the local log start) from the tier, recording
    /// bytes, latency and errors.
    pub async fn fetch(
        &self,
        topic_id: &uuid::Uuid,
        p: &Partition,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<RemoteFetch, TierReadError> {
        let started = Instant::now();
        let remote = self.remote_log(topic_id, p);
        let labels = [KeyValue::new("topic", p.topic.to_string())];
        // Records DeleteRecords removed are not served even while their segment stays.
        let floor = super::service::deleted_below(&remote, p);
        let found = remote.find(offset).filter(|_| offset >= floor);
        let result = match found {
            None => Ok(RemoteFetch::OutOfRange),
            Some(seg) => {
                let read = self.read_batches(&remote, seg, offset, max_bytes, min_one);
                match tokio::time::timeout(READ_TIMEOUT, read).await {
                    Ok(r) => r.map(RemoteFetch::Records),
                    // Downloads carry on in the background; the client retries.
                    Err(_) => Err(TierReadError::Unavailable {
                        key: seg.log_key.clone(),
                        reason: format!("no answer within {READ_TIMEOUT:?}"),
                    }),
                }
            }
        };
        match &result {
            Ok(RemoteFetch::Records(b)) => {
                self.metrics.fetch_bytes.add(b.len() as u64, &labels);
                self.metrics
                    .fetch_latency
                    .record(started.elapsed().as_secs_f64(), &labels);
            }
            Ok(RemoteFetch::OutOfRange) => {}
            Err(e) => {
                // Retention may have removed the segment while we read it.
                if self
                    .remote_log(topic_id, p)
                    .start_offset()
                    .is_none_or(|s| offset < s)
                {
                    return Ok(RemoteFetch::OutOfRange);
                }
                self.count_error(&p.topic, e);
                warn!(topic = %p.topic, partition = p.index, offset, error = %e, "fetch from the tier failed");
            }
        }
        result
    }

    /// The aborted transactions with records in the remote segment holding `offset`
    /// (what a `read_committed` fetch of it must list), from the segment's
    /// `.txnindex` object; none when it has no such object.
    pub async fn aborted_transactions(
        &self,
        topic_id: &uuid::Uuid,
        p: &Partition,
        offset: i64,
    ) -> Result<Vec<crate::log::AbortedTxn>, TierReadError> {
        let remote = self.remote_log(topic_id, p);
        let Some(seg) = remote.find(offset) else {
            return Ok(Vec::new());
        };
        let key: Arc<str> = Arc::from(seg.txn_index_key().as_str());
        if let Some(cached) = self.txn_indexes.lock().get(&key) {
            return Ok(cached.to_vec());
        }
        let aborted = match self.store.get(&key).await {
            Ok(raw) => crate::log::txn_index::decode(&String::from_utf8_lossy(&raw)),
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(TierReadError::from_store(&key, e)),
        };
        let aborted = Arc::new(aborted);
        let size = 64 + 24 * aborted.len() as u64;
        self.txn_indexes
            .lock()
            .insert(key, Arc::clone(&aborted), size);
        Ok(aborted.to_vec())
    }

    fn count_error(&self, topic: &str, e: &TierReadError) {
        self.metrics.read_errors.add(
            1,
            &[
                KeyValue::new("topic", topic.to_string()),
                KeyValue::new("kind", e.kind()),
            ],
        );
    }

    async fn read_batches(
        &self,
        remote: &RemoteLog,
        seg: &RemoteSegment,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Bytes, TierReadError> {
        let key: Arc<str> = Arc::from(seg.log_key.as_str());
        let size = seg.size_bytes;
        let offsets = self.offset_index(seg).await?;
        let rel = u32::try_from(offset - seg.base_offset).unwrap_or(u32::MAX);
        let mut pos = index::floor(&offsets, rel).map_or(0, |e| u64::from(e.position));
        // Walk headers from the index entry to the batch holding `offset`.
        let first = loop {
            let h = self.header_at(seg, &key, pos).await?;
            if h.base_offset > offset {
                return Err(TierReadError::corrupt(
                    seg,
                    format!(
                        "batch at {pos} starts at offset {} past {offset}",
                        h.base_offset
                    ),
                ));
            }
            if h.last_offset() >= offset {
                break h;
            }
            pos += h.total_len() as u64;
        };
        let avail = size - pos;
        let want = (max_bytes as u64).min(avail);
        let mut data = if want >= first.total_len() as u64 {
            self.read_range(&key, size, pos..pos + want).await?
        } else if min_one {
            // KIP-74: one batch even when it is larger than the limit.
            let len = (first.total_len() as u64).min(avail);
            self.read_range(&key, size, pos..pos + len).await?
        } else {
            return Ok(Bytes::new());
        };
        let whole = check_batches(seg, &data, first.base_offset)?;
        data.truncate(whole);
        self.read_ahead(remote, seg, &key, pos + whole as u64);
        Ok(data)
    }

    async fn header_at(
        &self,
        seg: &RemoteSegment,
        key: &Arc<str>,
        pos: u64,
    ) -> Result<BatchHeader, TierReadError> {
        if pos + HEADER_LEN as u64 > seg.size_bytes {
            return Err(TierReadError::corrupt(
                seg,
                format!("no batch at {pos} (segment is {} bytes)", seg.size_bytes),
            ));
        }
        let head = self
            .read_range(key, seg.size_bytes, pos..pos + HEADER_LEN as u64)
            .await?;
        let h = BatchHeader::parse(&head)
            .map_err(|e| TierReadError::corrupt(seg, format!("batch header at {pos}: {e}")))?;
        if pos + h.total_len() as u64 > seg.size_bytes || h.base_offset < seg.base_offset {
            return Err(TierReadError::corrupt(
                seg,
                format!("batch at {pos} does not fit the segment"),
            ));
        }
        Ok(h)
    }

    async fn read_range(
        &self,
        key: &Arc<str>,
        size: u64,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, TierReadError> {
        self.cache.read(&self.store, key, size, range).await
    }

    /// Starts downloading the chunks after `next_pos`, continuing into the next remote
    /// segment when this one ends.
    fn read_ahead(&self, remote: &RemoteLog, seg: &RemoteSegment, key: &Arc<str>, next_pos: u64) {
        let c = self.cache.chunk_bytes();
        let mut left = u64::from(self.read_ahead);
        if left == 0 {
            return;
        }
        let mut chunk = next_pos / c;
        let last = seg.size_bytes.saturating_sub(1) / c;
        while left > 0 && chunk <= last {
            self.cache.prefetch(&self.store, key, seg.size_bytes, chunk);
            chunk += 1;
            left -= 1;
        }
        if left > 0 {
            if let Some(next) = remote.find(seg.end_offset) {
                let next_key: Arc<str> = Arc::from(next.log_key.as_str());
                for i in 0..left {
                    self.cache
                        .prefetch(&self.store, &next_key, next.size_bytes, i);
                }
            }
        }
    }

    /// The uploaded offset index of a segment, decoded once and kept in memory. A
    /// missing or damaged index only costs speed: the scan then starts at the
    /// segment's first batch.
    async fn offset_index(
        &self,
        seg: &RemoteSegment,
    ) -> Result<Arc<Vec<OffsetEntry>>, TierReadError> {
        let key: Arc<str> = Arc::from(seg.index_key());
        if let Some(entries) = self.indexes.lock().get(&key) {
            return Ok(entries);
        }
        let raw = self.index_object(seg, &key).await?;
        let entries = Arc::new(index::parse_entries(&raw).unwrap_or_else(|| {
            warn!(key = %key, "remote offset index is damaged; scanning the segment");
            Vec::new()
        }));
        let size = raw.len() as u64 + 64;
        self.indexes.lock().insert(key, Arc::clone(&entries), size);
        Ok(entries)
    }

    /// The uploaded time index of a segment (only timestamp lookups need it).
    async fn time_index(&self, seg: &RemoteSegment) -> Result<Vec<TimeEntry>, TierReadError> {
        let raw = self.index_object(seg, &seg.time_index_key()).await?;
        Ok(index::parse_entries(&raw).unwrap_or_default())
    }

    async fn index_object(&self, seg: &RemoteSegment, key: &str) -> Result<Bytes, TierReadError> {
        let raw = match self.store.get(key).await {
            Ok(raw) => raw,
            Err(object_store::Error::NotFound { .. }) => {
                warn!(key, segment = %seg.log_key, "remote index missing; scanning the segment");
                Bytes::new()
            }
            Err(e) => return Err(TierReadError::from_store(key, e)),
        };
        Ok(raw)
    }

    /// First record at or after `ts` in the tier's part of the log (segments below
    /// `below`, the local log start): `(offset, timestamp)`.
    pub async fn offset_for_timestamp(
        &self,
        topic_id: &uuid::Uuid,
        p: &Partition,
        below: i64,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, TierReadError> {
        let remote = self.remote_log(topic_id, p);
        let result = self.search_timestamp(&remote, below, ts).await;
        if let Err(e) = &result {
            self.count_error(&p.topic, e);
            warn!(topic = %p.topic, partition = p.index, ts, error = %e, "timestamp lookup in the tier failed");
        }
        result
    }

    /// Largest timestamp of the tier's part of the log (below `below`), if any.
    pub fn max_timestamp_below(
        &self,
        topic_id: &uuid::Uuid,
        p: &Partition,
        below: i64,
    ) -> Option<i64> {
        self.remote_log(topic_id, p)
            .segments()
            .iter()
            .filter(|s| s.end_offset <= below && s.max_timestamp >= 0)
            .map(|s| s.max_timestamp)
            .max()
    }

    async fn search_timestamp(
        &self,
        remote: &RemoteLog,
        below: i64,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, TierReadError> {
        for seg in remote.segments() {
            if seg.end_offset > below {
                break;
            }
            if seg.max_timestamp < ts {
                continue;
            }
            let key: Arc<str> = Arc::from(seg.log_key.as_str());
            let times = self.time_index(seg).await?;
            let offsets = self.offset_index(seg).await?;
            let mut pos = index::last_below(&times, ts)
                .and_then(|t| index::floor(&offsets, t.relative_offset))
                .map_or(0, |e| u64::from(e.position));
            while pos < seg.size_bytes {
                let h = self.header_at(seg, &key, pos).await?;
                if h.max_timestamp >= ts {
                    let raw = self
                        .read_range(&key, seg.size_bytes, pos..pos + h.total_len() as u64)
                        .await?;
                    check_batches(seg, &raw, h.base_offset)?;
                    let found = crate::log::first_record_at_or_after(raw, &h, ts)
                        .map_err(|e| TierReadError::corrupt(seg, e.to_string()))?;
                    return Ok(Some(found));
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }
}

/// Validates the whole batches at the start of `data` (the first must start at
/// `first_base`, each next one where the previous ended, none past the segment end)
/// and returns their length.
fn check_batches(
    seg: &RemoteSegment,
    data: &[u8],
    first_base: i64,
) -> Result<usize, TierReadError> {
    let mut pos = 0usize;
    let mut expected = first_base;
    while data.len() - pos >= LOG_OVERHEAD {
        let len =
            i32::from_be_bytes([data[pos + 8], data[pos + 9], data[pos + 10], data[pos + 11]]);
        let total = LOG_OVERHEAD + usize::try_from(len).unwrap_or(usize::MAX - LOG_OVERHEAD);
        if data.len() - pos < total {
            break;
        }
        let h = batch::validate(&data[pos..pos + total])
            .map_err(|e| TierReadError::corrupt(seg, format!("batch at +{pos}: {e}")))?;
        if h.base_offset != expected || h.last_offset() >= seg.end_offset {
            return Err(TierReadError::corrupt(
                seg,
                format!(
                    "batch at +{pos} holds offsets {}..={}, expected to start at {expected}",
                    h.base_offset,
                    h.last_offset()
                ),
            ));
        }
        expected = h.last_offset() + 1;
        pos += total;
    }
    if pos == 0 && !data.is_empty() {
        return Err(TierReadError::corrupt(
            seg,
            "no whole batch where one was expected",
        ));
    }
    Ok(pos)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::log::retention::LocalRetention;
    use crate::log::{LogConfig, PartitionLog, ValidatedRecords};
    use crate::metadata::TopicRecord;
    use crate::telemetry::Metrics;
    use crate::tier::catalog::LocalCatalog;

    fn batch(i: i64) -> Vec<u8> {
        crate::log::batch::tests::make_batch(0, 4, 1_000 + i * 10, &[i as u8; 900])
    }

    pub(crate) struct Setup {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        cfg: BrokerConfig,
        pub(crate) rec: TopicRecord,
        pub(crate) p: Partition,
        catalog: Arc<LocalCatalog>,
    }

    /// A tiered partition of 300 batches in 8 KiB segments, uploaded, with local
    /// retention down to the last few segments.
    pub(crate) async fn setup() -> (Setup, Arc<Tier>, Vec<u8>) {
        let data = tempfile::tempdir().unwrap();
        let tier_dir = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig {
            data_dir: data.path().to_path_buf(),
            tier_dir: tier_dir.path().to_string_lossy().into_owned(),
            tier_cache_chunk_bytes: 64 << 10,
            tier_cache_bytes: 256 << 10,
            ..BrokerConfig::default()
        };
        let lc = LogConfig {
            segment_bytes: 8192,
            index_interval_bytes: 1024,
            retention_ms: -1,
            remote: Some(LocalRetention {
                local_retention_ms: -2,
                local_retention_bytes: 20_000,
            }),
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&data.path().join("t-0"), lc, true, 0).unwrap();
        let p = Partition::standalone(Arc::from("t"), 0, log);
        for i in 0..300 {
            p.append(ValidatedRecords::new(&batch(i), 1 << 20).unwrap(), 0)
                .unwrap();
        }
        // Everything as stored, before any local deletion.
        let mut all = Vec::new();
        let mut off = 0;
        loop {
            let chunk = p.fetch(off, 1 << 20, true).unwrap().plan.read().unwrap();
            let Some((h, _)) = batch::headers(&chunk).last() else {
                break;
            };
            off = h.last_offset() + 1;
            all.extend_from_slice(&chunk);
        }
        let backend = cfg.tier_backend(&|_| None).unwrap().unwrap();
        let rec = TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
            internal: false,
        };
        let catalog = Arc::new(LocalCatalog::with_topic(&rec).unwrap());
        let tier = Tier::open(&cfg, &backend, &Metrics::new().unwrap(), catalog.clone()).unwrap();
        tier.pass_partition(&rec, &p).await;
        assert!(
            p.apply_retention(0).unwrap() > 0,
            "uploaded segments go locally"
        );
        assert!(p.log_start_offset() > 0);
        let s = Setup {
            _dirs: (data, tier_dir),
            cfg,
            rec,
            p,
            catalog,
        };
        (s, tier, all)
    }

    async fn read_from(tier: &Tier, s: &Setup, mut off: i64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while off < s.p.log_start_offset() {
            let RemoteFetch::Records(b) =
                tier.fetch(&s.rec.id, &s.p, off, max, true).await.unwrap()
            else {
                panic!("offset {off} out of range");
            };
            let (h, _) = batch::headers(&b).last().unwrap();
            off = h.last_offset() + 1;
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn offsets_below_the_local_start_are_served_byte_identical_from_the_tier() {
        let (s, tier, all) = setup().await;
        let local_start = s.p.log_start_offset();
        assert_eq!(tier.log_start_offset(&s.rec.id, &s.p, local_start), 0);
        // Small and large fetches, from the start and from the middle of a batch.
        for max in [1, 3000, 100_000] {
            let got = read_from(&tier, &s, 0, max).await;
            assert_eq!(got[..], all[..got.len()], "max_bytes {max}");
            let (h, _) = batch::headers(&got).last().unwrap();
            assert_eq!(h.last_offset() + 1, local_start);
        }
        let mid = read_from(&tier, &s, 41, 5000).await;
        let (h, _) = batch::headers(&mid).next().unwrap();
        assert_eq!(h.base_offset, 40, "the batch holding offset 41");
        // Timestamps that only the tier holds; the records of batch b carry 1000+10b.
        for (ts, want) in [(1_070, (28, 1_070)), (1_072, (32, 1_080)), (0, (0, 1_000))] {
            assert_eq!(
                tier.offset_for_timestamp(&s.rec.id, &s.p, local_start, ts)
                    .await
                    .unwrap(),
                Some(want)
            );
        }
        assert_eq!(
            tier.offset_for_timestamp(&s.rec.id, &s.p, local_start, i64::MAX)
                .await
                .unwrap(),
            None
        );
        // Below the tier's start: out of range, not an error.
        assert!(matches!(
            tier.fetch(&s.rec.id, &s.p, -1, 100, true).await,
            Ok(RemoteFetch::OutOfRange)
        ));
    }

    #[tokio::test]
    async fn corrupt_or_missing_objects_are_errors_for_that_read() {
        let (s, tier, _) = setup().await;
        let m = tier.remote_log(&s.rec.id, &s.p);
        let segs = m.segments();
        assert!(segs.len() >= 4);
        // Flip bytes in the middle of the second segment's data.
        let victim = &segs[1];
        let mut raw = tier.store.get(&victim.log_key).await.unwrap().to_vec();
        let n = raw.len();
        for b in &mut raw[n / 2..n / 2 + 64] {
            *b ^= 0xff;
        }
        tier.store
            .put(&victim.log_key, Bytes::from(raw))
            .await
            .unwrap();
        // Delete the third segment's data.
        tier.store.delete(&segs[2].log_key).await.unwrap();
        // A fresh tier (cold cache) reads them.
        let backend = s.cfg.tier_backend(&|_| None).unwrap().unwrap();
        let cold = Tier::open(
            &s.cfg,
            &backend,
            &Metrics::new().unwrap(),
            s.catalog.clone(),
        )
        .unwrap();
        let mut errors = Vec::new();
        let mut off = victim.base_offset;
        while off < segs[1].end_offset {
            match cold.fetch(&s.rec.id, &s.p, off, 1 << 20, true).await {
                Ok(RemoteFetch::Records(b)) => {
                    off = batch::headers(&b).last().unwrap().0.last_offset() + 1;
                }
                other => {
                    errors.push(other);
                    break;
                }
            }
        }
        assert!(
            matches!(errors[..], [Err(TierReadError::Corrupt { .. })]),
            "{errors:?}"
        );
        assert!(matches!(
            cold.fetch(&s.rec.id, &s.p, segs[2].base_offset, 1 << 20, true)
                .await,
            Err(TierReadError::Missing { .. })
        ));
        // Other segments still read fine.
        assert!(matches!(
            cold.fetch(&s.rec.id, &s.p, segs[3].base_offset, 1 << 20, true)
                .await,
            Ok(RemoteFetch::Records(_))
        ));
    }
}
