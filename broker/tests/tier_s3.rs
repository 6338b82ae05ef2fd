//! Tiering against a real S3-compatible server (SeaweedFS on loopback, started by the
//! e2e harness): closed segments of a remote-storage-enabled topic land in the bucket
//! byte for byte, in order, with a contiguous manifest, and uploads resume after a
//! broker restart without duplicates.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{free_addr, Client};
use indexmap::IndexMap;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_broker::config::BrokerConfig;
use strata_broker::tier::store::{TierBackend, TierStore};
use strata_e2e::binaries::Binaries;
use strata_e2e::s3::S3Server;
use strata_e2e::testing;
use tokio::sync::oneshot;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn batch(first: i64, n: usize) -> bytes::Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000 + first + i as i64,
            key: None,
            value: Some(bytes::Bytes::from(format!(
                "value-{}-{}",
                first + i as i64,
                "x".repeat(500)
            ))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(cfg: BrokerConfig) -> Running {
    let (stop, rx) = oneshot::channel();
    let task = tokio::spawn(strata_broker::app::run(cfg, async move {
        let _ = rx.await;
    }));
    Running { stop, task }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), r.task).await;
}

/// Connects once the broker is ready (registered with its quorum).
async fn connect(addr: std::net::SocketAddr, metrics: std::net::SocketAddr) -> Client {
    common::wait_ready(metrics).await;
    Client::connect(addr).await
}

async fn produce(c: &mut Client, from: i64, batches: i64) {
    for b in 0..batches {
        let mut pd = PartitionProduceData::default();
        pd.index = 0;
        pd.records = Some(batch(from + b * 20, 20));
        let mut td = TopicProduceData::default();
        td.name = TopicName(s("tiered"));
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = 1;
        req.timeout_ms = 10_000;
        req.topic_data = vec![td];
        let resp: ProduceResponse = c.call(ApiKey::Produce, 7, &req).await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
}

#[tokio::test]
async fn closed_segments_reach_s3_in_order_and_resume_after_restart() {
    if !testing::binaries_present("tier S3 test", &["weed"]) {
        return;
    }
    let bins = Binaries::from_env();
    let s3dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&bins, s3dir.path(), "strata-tier")
        .await
        .expect("SeaweedFS");
    let info = server.info.clone();
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = BrokerConfig::dev();
    cfg.data_dir = data.path().to_path_buf();
    cfg.kafka_listen = free_addr();
    cfg.metrics_listen = free_addr();
    cfg.admin_listen = free_addr();
    cfg.offsets_topic_partitions = 1;
    cfg.tier_bucket = info.bucket.clone();
    cfg.tier_endpoint = info.endpoint.clone();
    cfg.tier_region = info.region.clone();
    cfg.tier_prefix = "cluster-test".into();
    cfg.tier_access_key_id = info.access_key.clone();
    cfg.tier_secret_access_key = info.secret_key.clone();
    cfg.tier_upload_interval_ms = 200;
    let addr = cfg.kafka_listen;

    let broker = start(cfg.clone());
    let mut c = connect(addr, cfg.metrics_listen).await;
    let mut t = CreatableTopic::default();
    t.name = TopicName(s("tiered"));
    t.num_partitions = 1;
    t.replication_factor = 1;
    // The records carry 2023 timestamps: without retention.ms=-1, total retention
    // (which now applies to the tier too) would expire them as soon as they land.
    for (k, v) in [
        ("segment.bytes", "65536"),
        ("remote.storage.enable", "true"),
        ("retention.ms", "-1"),
    ] {
        let mut cfgv = CreatableTopicConfig::default();
        cfgv.name = s(k);
        cfgv.value = Some(s(v));
        t.configs.push(cfgv);
    }
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).await;
    assert_eq!(r.topics[0].error_code, 0);
    produce(&mut c, 0, 60).await;

    // The committed remote log, from the broker's metadata quorum.
    let admin = cfg.admin_listen;
    let wait_segments = |n: usize| async move {
        for _ in 0..150 {
            let m = common::describe_partition(admin, "tiered", 0)
                .await
                .map(|d| common::remote_log(&d))
                .unwrap_or_default();
            if m.segments().len() >= n {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} segments uploaded in time");
    };
    let m = wait_segments(5).await;
    assert_eq!(m.start_offset(), Some(0));
    assert!(m
        .segments()
        .windows(2)
        .all(|w| w[0].end_offset == w[1].base_offset));

    let store = TierStore::new(
        &TierBackend::S3 {
            endpoint: info.endpoint.clone(),
            region: info.region.clone(),
            bucket: info.bucket.clone(),
            access_key: info.access_key.clone(),
            secret_key: info.secret_key.clone(),
        },
        "cluster-test",
    )
    .expect("store");
    for seg in m.segments() {
        let remote = store
            .get(&seg.log_key)
            .await
            .expect("segment in the bucket");
        let local = std::fs::read(
            data.path()
                .join("tiered-0")
                .join(format!("{:020}.log", seg.base_offset)),
        )
        .expect("local");
        assert_eq!(
            remote.as_ref(),
            &local[..],
            "segment {} differs",
            seg.base_offset
        );
    }

    // Restart; more data; the uploader continues where it stopped.
    stop(broker).await;
    let broker = start(cfg.clone());
    let mut c = connect(addr, cfg.metrics_listen).await;
    produce(&mut c, 60 * 20, 60).await;
    let m2 = wait_segments(m.segments().len() + 5).await;
    assert_eq!(&m2.segments()[..m.segments().len()], m.segments());
    assert!(m2
        .segments()
        .windows(2)
        .all(|w| w[0].end_offset == w[1].base_offset));
    let m3 = wait_segments(m2.segments().len()).await;
    stop(broker).await;
    // Every committed segment has its object; the only objects not in the remote log
    // can be uploads that were in flight (or committed) after it was read, past its
    // end (an interrupted one is re-uploaded under the same key on the next pass).
    let keys = store.list("").await.expect("list");
    for seg in m3.segments() {
        assert!(
            keys.iter().any(|k| k.ends_with(seg.log_key.as_str())),
            "missing {}",
            seg.log_key
        );
    }
    let end = m3.end_offset().expect("uploaded");
    for k in keys.iter().filter(|k| k.ends_with(".log")) {
        let committed = m3
            .segments()
            .iter()
            .any(|seg| k.ends_with(seg.log_key.as_str()));
        let base: i64 = k
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".log"))
            .and_then(|f| f.split('-').next())
            .and_then(|b| b.parse().ok())
            .expect("base");
        assert!(
            committed || base >= end,
            "stray object {k} below the manifest end {end}"
        );
    }
    drop(server);
}
