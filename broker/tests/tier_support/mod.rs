//! Helpers of the tier read-path tests and the catch-up benchmark: a broker tiering
//! to a real SeaweedFS, deterministic record batches that can be regenerated for a
//! byte-for-byte comparison, a catch-up consumer and a `/metrics` scraper.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_broker::config::BrokerConfig;
use strata_broker::metadata::remote_log::RemoteLog;
use strata_broker::tier::store::{TierBackend, TierStore};
use strata_e2e::s3::S3Info;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::common::{free_addr, Client};

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Records per generated batch.
pub const RECORDS: i64 = 100;
/// Timestamp of the first record of batch 0; batch i's records carry T0 + 1000 i + j.
pub const T0: i64 = 1_700_000_000_000;

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Batch `i` of a test stream: `RECORDS` records of `value_len` bytes each, every
/// value tagged with (batch, record) so any misplaced byte shows.
pub fn make_batch(i: i64, value_len: usize) -> Vec<u8> {
    let mut records = Vec::with_capacity(RECORDS as usize * (value_len + 16));
    let mut rec = Vec::with_capacity(value_len + 16);
    for j in 0..RECORDS {
        rec.clear();
        rec.push(0); // attributes
        varint(&mut rec, j); // timestamp delta
        varint(&mut rec, j); // offset delta
        varint(&mut rec, -1); // null key
        varint(&mut rec, value_len as i64);
        let start = rec.len();
        rec.resize(start + value_len, (i + j) as u8);
        let tag = format!("{i}:{j};");
        let n = tag.len().min(value_len);
        rec[start..start + n].copy_from_slice(&tag.as_bytes()[..n]);
        varint(&mut rec, 0); // no headers
        varint(&mut records, rec.len() as i64);
        records.extend_from_slice(&rec);
    }
    let ts = T0 + i * 1000;
    let mut b = Vec::with_capacity(61 + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((61 - 12 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((RECORDS - 1) as i32).to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&(ts + RECORDS - 1).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(RECORDS as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Checks that `stored` is batch `i` as produced: same bytes except the base offset
/// (assigned by the broker, must be `i * RECORDS`) and the partition leader epoch,
/// neither covered by the CRC.
pub fn assert_batch(stored: &[u8], i: i64, value_len: usize) {
    let want = make_batch(i, value_len);
    assert_eq!(stored.len(), want.len(), "batch {i}: length");
    let base = i64::from_be_bytes(stored[..8].try_into().expect("8 bytes"));
    assert_eq!(base, i * RECORDS, "batch {i}: base offset");
    assert!(
        stored[8..12] == want[8..12] && stored[16..] == want[16..],
        "batch {i}: bytes differ"
    );
}

pub struct Running {
    pub cfg: BrokerConfig,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Broker settings tiering to `info` with fast passes.
pub fn config(data: &Path, info: &S3Info) -> BrokerConfig {
    let mut cfg = BrokerConfig::dev();
    cfg.data_dir = data.to_path_buf();
    cfg.kafka_listen = free_addr();
    cfg.metrics_listen = free_addr();
    cfg.admin_listen = free_addr();
    cfg.offsets_topic_partitions = 1;
    cfg.tier_bucket = info.bucket.clone();
    cfg.tier_endpoint = info.endpoint.clone();
    cfg.tier_region = info.region.clone();
    cfg.tier_prefix = "cluster-read".into();
    cfg.tier_access_key_id = info.access_key.clone();
    cfg.tier_secret_access_key = info.secret_key.clone();
    cfg.tier_upload_interval_ms = 200;
    cfg.retention_check_interval_ms = 200;
    cfg
}

pub fn store(info: &S3Info) -> TierStore {
    TierStore::new(
        &TierBackend::S3 {
            endpoint: info.endpoint.clone(),
            region: info.region.clone(),
            bucket: info.bucket.clone(),
            access_key: info.access_key.clone(),
            secret_key: info.secret_key.clone(),
        },
        "cluster-read",
    )
    .expect("store")
    .with_attempts(2)
}

pub async fn start(cfg: BrokerConfig) -> (Running, Client) {
    let (stop, rx) = oneshot::channel();
    let addr = cfg.kafka_listen;
    let task = tokio::spawn(strata_broker::app::run(cfg.clone(), async move {
        let _ = rx.await;
    }));
    crate::common::wait_ready(cfg.metrics_listen).await;
    (Running { cfg, stop, task }, Client::connect(addr).await)
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

pub async fn create_topic(c: &mut Client, name: &str, configs: &[(&str, &str)]) {
    let mut t = CreatableTopic::default();
    t.name = TopicName(s(name));
    t.num_partitions = 1;
    t.replication_factor = 1;
    for (k, v) in configs {
        let mut cv = CreatableTopicConfig::default();
        cv.name = s(k);
        cv.value = Some(s(v));
        t.configs.push(cv);
    }
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).await;
    assert_eq!(r.topics[0].error_code, 0, "create {name}");
}

pub async fn delete_topic(c: &mut Client, name: &str) {
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![TopicName(s(name))];
    req.timeout_ms = 10_000;
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &req).await;
    assert_eq!(r.responses[0].error_code, 0, "delete {name}");
}

/// Produces batches `from..to`, `per_request` in each Produce request; returns the
/// error code of the first failed request, if any.
pub async fn produce(
    c: &mut Client,
    topic: &str,
    (from, to): (i64, i64),
    per_request: i64,
    value_len: usize,
) -> i16 {
    let mut i = from;
    while i < to {
        let n = (to - i).min(per_request);
        let mut records = Vec::new();
        for k in i..i + n {
            records.extend_from_slice(&make_batch(k, value_len));
        }
        let mut pd = PartitionProduceData::default();
        pd.index = 0;
        pd.records = Some(bytes::Bytes::from(records));
        let mut td = TopicProduceData::default();
        td.name = TopicName(s(topic));
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = 1;
        req.timeout_ms = 10_000;
        req.topic_data = vec![td];
        let resp: ProduceResponse = c.call(ApiKey::Produce, 7, &req).await;
        let pr = &resp.responses[0].partition_responses[0];
        if pr.error_code != 0 {
            return pr.error_code;
        }
        assert_eq!(pr.base_offset, i * RECORDS, "produce offsets");
        i += n;
    }
    0
}

/// One Fetch (v12, by name) of partition 0: (error code, high watermark, log start,
/// records).
pub async fn fetch(
    c: &mut Client,
    topic: &str,
    offset: i64,
    partition_max: i32,
) -> (i16, i64, i64, bytes::Bytes) {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = partition_max;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(s(topic));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 64 << 20;
    req.topics = vec![ft];
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req).await;
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.log_start_offset,
        p.records.clone().unwrap_or_default(),
    )
}

/// Reads `[from, to)` like a consumer catching up, checking every batch against what
/// was produced. Returns the bytes read and the time it took.
pub async fn consume_and_verify(
    c: &mut Client,
    topic: &str,
    from: i64,
    to: i64,
    value_len: usize,
) -> (u64, Duration) {
    let started = Instant::now();
    let mut offset = from;
    let mut bytes = 0u64;
    while offset < to {
        let (err, _, _, records) = fetch(c, topic, offset, 1 << 20).await;
        assert_eq!(err, 0, "fetch at {offset}");
        assert!(!records.is_empty(), "empty fetch at {offset}");
        let mut pos = 0;
        while pos + 12 <= records.len() {
            let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4"));
            let end = pos + 12 + len as usize;
            assert!(end <= records.len(), "partial batch at {offset}");
            let base = i64::from_be_bytes(records[pos..pos + 8].try_into().expect("8"));
            assert_batch(&records[pos..end], base / RECORDS, value_len);
            offset = base + RECORDS;
            pos = end;
        }
        bytes += records.len() as u64;
    }
    (bytes, started.elapsed())
}

/// ListOffsets (v7) of partition 0 for `timestamp`: (error code, offset).
pub async fn list_offset(c: &mut Client, topic: &str, timestamp: i64) -> (i16, i64) {
    let mut lp = ListOffsetsPartition::default();
    lp.partition_index = 0;
    lp.timestamp = timestamp;
    let mut lt = ListOffsetsTopic::default();
    lt.name = TopicName(s(topic));
    lt.partitions = vec![lp];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![lt];
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req).await;
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// The committed remote log of partition 0 of `topic`, as the broker's quorum has it.
pub fn manifest(admin: SocketAddr, topic: &str) -> RemoteLog {
    crate::common::remote_log_blocking(admin, topic, 0)
}

/// Base offset of the active (newest) local segment: the upload backlog is empty
/// when the manifest ends there.
/// Base offsets of the `.log` segment files in partition 0 of `topic`.
fn segment_bases(data: &Path, topic: &str) -> Vec<i64> {
    std::fs::read_dir(data.join(format!("{topic}-0")))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".log")?.parse::<i64>().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The base offset of the oldest segment still on local disk (0 when none).
pub fn local_start(data: &Path, topic: &str) -> i64 {
    segment_bases(data, topic).into_iter().min().unwrap_or(0)
}

pub fn active_base(data: &Path, topic: &str) -> i64 {
    segment_bases(data, topic).into_iter().max().unwrap_or(0)
}

/// (count, bytes) of the `.log` segment files in a partition directory.
pub fn local_segments(data: &Path, topic: &str) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(data.join(format!("{topic}-0"))) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                n += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (n, bytes)
}

/// Sum of the samples of a Prometheus metric whose line contains every `filter`.
pub async fn metric(addr: SocketAddr, name: &str, filters: &[&str]) -> f64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0.0;
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 200 ms until it returns Some, or panics after `timeout`.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
