//! Tiered storage across a leader failover, against a real S3-compatible server
//! (SeaweedFS on loopback) and three `strata-broker` processes forming one cluster:
//! a replicated, tiered partition takes produce load while its leader uploads; the
//! leader is killed with SIGKILL mid-stream; the new leader continues the committed
//! remote log exactly where it ends. The remote log (read from the metadata quorum
//! through the admin API) stays contiguous without duplicates and keeps growing, a
//! follower deletes locally only what the tier holds, and a consumer from offset 0
//! reads every acknowledged batch back byte-identical, partly from the tier.

mod common;
mod tier_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::{CreateTopicRequest, PartitionDescription};
use strata_broker::metadata::remote_log::RemoteLog;
use strata_e2e::binaries::Binaries;
use strata_e2e::s3::S3Server;
use strata_e2e::testing;
use tier_support::{fetch, make_batch, store, RECORDS};

const TOPIC: &str = "failover";
const VALUE_LEN: usize = 200;
/// Batches produced in all (~21 KB each: about 25 MiB).
const BATCHES: i64 = 1200;

struct Node {
    id: i32,
    kafka: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

/// Kills every broker still running when the test ends, also on a failed assertion.
struct Cluster(Vec<Node>);

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.0 {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn free_on(host: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((host, 0)).expect("bind");
    l.local_addr().expect("addr")
}

/// Segment size of broker `id`: 11, 13 or 17 batches. Replicas roll their own
/// segments; different sizes make sure the new leader's boundaries differ from the old
/// leader's (as time-based rolls, restarts or reassignments do in practice), so its
/// first upload has to continue the remote log in the middle of a local segment.
fn segment_bytes(id: i32) -> usize {
    let batch = make_batch(0, VALUE_LEN).len();
    batch * batches_per_segment(id) as usize + batch / 2
}

fn batches_per_segment(id: i32) -> i64 {
    [11, 13, 17][(id as usize - 1) % 3]
}

fn spawn(n: &Node, voters: &str, s3: &strata_e2e::s3::S3Info) -> std::process::Child {
    std::fs::create_dir_all(&n.dir).expect("data dir");
    let log = std::fs::File::create(n.dir.with_extension("log")).expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_strata-broker"))
        .arg("serve")
        .env("STRATA_NODE_ID", n.id.to_string())
        .env("STRATA_CONTROLLER_VOTERS", voters)
        .env("STRATA_DATA_DIR", &n.dir)
        .env("STRATA_KAFKA_LISTEN", n.kafka.to_string())
        .env("STRATA_ADMIN_LISTEN", n.admin.to_string())
        .env("STRATA_METRICS_LISTEN", n.metrics.to_string())
        .env("STRATA_OFFSETS_TOPIC_PARTITIONS", "1")
        .env("STRATA_LOG_SEGMENT_BYTES", segment_bytes(n.id).to_string())
        .env("STRATA_BROKER_SESSION_TIMEOUT_MS", "3000")
        .env("STRATA_REPLICA_LAG_TIME_MAX_MS", "5000")
        .env("STRATA_RETENTION_CHECK_INTERVAL_MS", "200")
        .env("STRATA_TIER_UPLOAD_INTERVAL_MS", "200")
        .env("STRATA_TIER_BUCKET", &s3.bucket)
        .env("STRATA_TIER_ENDPOINT", &s3.endpoint)
        .env("STRATA_TIER_REGION", &s3.region)
        .env("STRATA_TIER_PREFIX", "cluster-read")
        .env("STRATA_TIER_ACCESS_KEY_ID", &s3.access_key)
        .env("STRATA_TIER_SECRET_ACCESS_KEY", &s3.secret_key)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("spawn strata-broker")
}

/// The partition as the first answering broker (other than `skip`) describes it.
async fn describe(nodes: &[Node], skip: Option<i32>) -> Option<PartitionDescription> {
    for n in nodes.iter().filter(|n| Some(n.id) != skip) {
        if let Some(d) = common::describe_partition(n.admin, TOPIC, 0).await {
            return Some(d);
        }
    }
    None
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Produces batch `i` with acks=all to `addr`; `true` when acknowledged.
async fn produce_one(c: &mut common::Client, i: i64) -> bool {
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(bytes::Bytes::from(make_batch(i, VALUE_LEN)));
    let mut td = TopicProduceData::default();
    td.name = TopicName(tier_support::s(TOPIC));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let resp: Option<ProduceResponse> = c.try_call(ApiKey::Produce, 7, &req).await;
    resp.is_some_and(|r| r.responses[0].partition_responses[0].error_code == 0)
}

/// Whether `stored` is batch `i` as produced (the base offset and partition leader
/// epoch, which the broker assigns and the CRC does not cover, aside).
fn is_batch(stored: &[u8], i: i64) -> bool {
    let want = make_batch(i, VALUE_LEN);
    stored.len() == want.len() && stored[8..12] == want[8..12] && stored[16..] == want[16..]
}

fn assert_contiguous(m: &RemoteLog) {
    for w in m.segments().windows(2) {
        assert_eq!(
            w[0].end_offset, w[1].base_offset,
            "remote log has a gap or an overlap: {:?} then {:?}",
            w[0], w[1]
        );
    }
    for s in m.segments() {
        assert!(s.base_offset < s.end_offset, "empty remote segment {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_continues_the_committed_remote_log_after_a_kill_9_of_the_old_one() {
    if !testing::binaries_present("tier failover test", &["weed"]) {
        return;
    }
    testing::init_tracing();
    let s3dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&Binaries::from_env(), s3dir.path(), "strata-failover")
        .await
        .expect("SeaweedFS");
    let base = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let host = format!("127.0.0.{id}");
            Node {
                id,
                kafka: free_on(&host),
                admin: free_on(&host),
                metrics: free_on(&host),
                dir: base.path().join(format!("node-{id}")),
                child: None,
            }
        })
        .collect();
    let voters: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}@{}", n.id, n.admin))
        .collect();
    for n in &mut nodes {
        n.child = Some(spawn(n, &voters.join(","), &server.info));
    }
    let mut cluster = Cluster(nodes);
    for n in &cluster.0 {
        common::wait_ready(n.metrics).await;
    }

    // RF=3, tiered, a small local tail; small segments of each broker's default size.
    let admin = cluster.0[0].admin;
    wait_for("topic creation", Duration::from_secs(60), || async move {
        let mut c = AdminClient::connect(format!("http://{admin}")).await.ok()?;
        let configs: HashMap<String, String> = [
            ("remote.storage.enable", "true"),
            ("local.retention.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("min.insync.replicas", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = c
            .create_topic(CreateTopicRequest {
                name: TOPIC.into(),
                partitions: 1,
                replication_factor: 3,
                configs,
                validate_only: false,
            })
            .await;
        match r {
            Ok(_) => Some(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Some(()),
            Err(_) => None,
        }
    })
    .await;
    let first = wait_for("a leader", Duration::from_secs(30), || {
        let nodes = &cluster.0;
        async move { describe(nodes, None).await.filter(|d| d.leader >= 0) }
    })
    .await;

    // The producer follows leadership and retries a batch until it is acknowledged
    // (so a batch whose acknowledgement died with the leader may appear twice).
    let kafka: HashMap<i32, SocketAddr> = cluster.0.iter().map(|n| (n.id, n.kafka)).collect();
    let admins: Vec<SocketAddr> = cluster.0.iter().map(|n| n.admin).collect();
    let acked = Arc::new(AtomicI64::new(0));
    let producer = {
        let acked = Arc::clone(&acked);
        let kafka = kafka.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(400);
            let mut leader = first.leader;
            let mut conn: Option<common::Client> = None;
            let mut i = 0;
            while i < BATCHES {
                assert!(Instant::now() < deadline, "produce stalled at batch {i}");
                if conn.is_none() {
                    conn = common::Client::try_connect(kafka[&leader]).await;
                }
                if let Some(c) = conn.as_mut() {
                    if produce_one(c, i).await {
                        i += 1;
                        acked.store(i, Ordering::Release);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(300)).await;
                for a in &admins {
                    if let Some(d) = common::describe_partition(*a, TOPIC, 0).await {
                        if d.leader >= 0 {
                            leader = d.leader;
                            break;
                        }
                    }
                }
            }
        })
    };

    // Uploads under way: kill -9 the partition leader.
    let before = wait_for(
        "uploads by the first leader",
        Duration::from_secs(180),
        || {
            let nodes = &cluster.0;
            async move {
                let d = describe(nodes, None).await?;
                let m = common::remote_log(&d);
                (m.segments().len() >= 4).then_some((d, m))
            }
        },
    )
    .await;
    let (d0, m0) = before;
    assert_contiguous(&m0);
    assert_eq!(m0.start_offset(), Some(0));
    let old = d0.leader;
    let old_epoch = d0.leader_epoch;
    let produced_at_kill = acked.load(Ordering::Acquire);
    assert!(produced_at_kill < BATCHES, "the kill must land under load");
    {
        let victim = cluster.0.iter_mut().find(|n| n.id == old).expect("leader");
        let mut child = victim.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    eprintln!(
        "killed leader {old} (epoch {}) at {} remote segments, {produced_at_kill} batches acked",
        d0.leader_epoch,
        m0.segments().len()
    );

    // A new leader continues the committed remote log.
    let grown = wait_for(
        "uploads by the new leader",
        Duration::from_secs(240),
        || {
            let nodes = &cluster.0;
            let m0 = m0.clone();
            async move {
                let d = describe(nodes, Some(old)).await?;
                let m = common::remote_log(&d);
                let by_new = m
                    .segments()
                    .iter()
                    .filter(|s| s.leader_epoch > old_epoch)
                    .count();
                (d.leader >= 0
                    && d.leader != old
                    && by_new >= 3
                    && m.segments().len() > m0.segments().len())
                .then_some((d, m))
            }
        },
    )
    .await;
    let (d1, m1) = grown;
    let new_leader_log = cluster
        .0
        .iter()
        .find(|n| n.id == d1.leader)
        .map(|n| n.dir.with_extension("log"))
        .expect("new leader");
    let cuts = std::fs::read_to_string(&new_leader_log)
        .unwrap_or_default()
        .matches("cutting a local segment to continue the remote log")
        .count();
    // Where the new leader took over, and whether that is one of its own segment
    // boundaries (multiples of its segment size in batches; they coincide with the
    // old leader's only at 11 or more of the old leader's segments, and then there is
    // nothing to cut).
    let takeover = m1
        .segments()
        .iter()
        .find(|s| s.leader_epoch > old_epoch)
        .map(|s| s.base_offset)
        .expect("a segment of the new leader");
    let mid_segment = (takeover / RECORDS) % batches_per_segment(d1.leader) != 0;
    eprintln!(
        "new leader {} took over the remote log at {takeover} (mid-segment: {mid_segment}), cutting {cuts} local segment(s)",
        d1.leader
    );
    if mid_segment {
        assert!(
            cuts >= 1,
            "the new leader continued the remote log mid-segment ({})",
            new_leader_log.display()
        );
    }
    tokio::time::timeout(Duration::from_secs(420), producer)
        .await
        .expect("producer finished")
        .expect("producer task");
    assert_eq!(acked.load(Ordering::Acquire), BATCHES);

    // Let the new leader upload what has closed, then check the whole remote log.
    let (d, m) = wait_for("the remote log to settle", Duration::from_secs(120), || {
        let nodes = &cluster.0;
        async move {
            let d = describe(nodes, Some(old)).await?;
            let m = common::remote_log(&d);
            (m.end_offset()? >= d.high_watermark - 2 * 13 * RECORDS).then_some((d, m))
        }
    })
    .await;
    assert_contiguous(&m);
    assert_eq!(m.start_offset(), Some(0));
    assert_eq!(
        &m.segments()[..m0.segments().len()],
        m0.segments(),
        "committed remote segments are never rewritten"
    );
    let mut epochs: Vec<i32> = m.segments().iter().map(|s| s.leader_epoch).collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]));
    epochs.dedup();
    assert!(epochs.len() >= 2, "segments of both leaders: {epochs:?}");
    let keys = store(&server.info).list("").await.expect("list bucket");
    for seg in m.segments() {
        for key in [seg.log_key.clone(), seg.index_key()] {
            assert!(
                keys.iter().any(|k| k.ends_with(&key)),
                "{key} not in the bucket"
            );
        }
    }
    eprintln!(
        "remote log: {} segments up to {:?}, epochs {epochs:?}; new leader {} (epoch {})",
        m.segments().len(),
        m.end_offset(),
        d1.leader,
        d1.leader_epoch
    );

    // A surviving follower deletes locally what the tier holds (and only that).
    let follower = cluster
        .0
        .iter()
        .find(|n| n.id != old && n.id != d.leader)
        .expect("a follower")
        .admin;
    let local_start = wait_for(
        "local deletion on the follower",
        Duration::from_secs(60),
        || async move {
            let fd = common::describe_partition(follower, TOPIC, 0).await?;
            let m = common::remote_log(&fd);
            (fd.local_start_offset > 0).then_some((fd.local_start_offset, m.end_offset()))
        },
    )
    .await;
    assert!(
        local_start.1.is_some_and(|end| local_start.0 <= end),
        "the follower kept everything beyond the remote end: {local_start:?}"
    );

    // A consumer from offset 0 (on the new leader, whose local log no longer starts
    // at 0) reads every batch back byte-identical, in order.
    let leader_kafka = kafka[&d.leader];
    let ld = wait_for(
        "local deletion on the new leader",
        Duration::from_secs(60),
        || {
            let a = cluster.0.iter().find(|n| n.id == d.leader).map(|n| n.admin);
            async move {
                let ld = common::describe_partition(a?, TOPIC, 0).await?;
                (ld.local_start_offset > 0).then_some(ld)
            }
        },
    )
    .await;
    let mut c = common::Client::connect(leader_kafka).await;
    let mut offset = 0;
    let mut next = 0i64;
    let mut duplicates = 0;
    while offset < ld.high_watermark {
        let (err, _, log_start, records) = fetch(&mut c, TOPIC, offset, 1 << 20).await;
        assert_eq!((err, log_start), (0, 0), "fetch at {offset}");
        assert!(!records.is_empty(), "empty fetch at {offset}");
        let mut pos = 0;
        while pos + 12 <= records.len() {
            let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4"));
            let end = pos + 12 + len as usize;
            assert!(end <= records.len(), "partial batch at {offset}");
            let stored = &records[pos..end];
            let base = i64::from_be_bytes(stored[..8].try_into().expect("8"));
            assert!(base >= offset, "offsets go forward: {base} after {offset}");
            if is_batch(stored, next) {
                next += 1;
            } else if next > 0 && is_batch(stored, next - 1) {
                duplicates += 1;
            } else {
                panic!("batch at offset {base} is not batch {next} as produced");
            }
            offset = base + RECORDS;
            pos = end;
        }
    }
    assert_eq!(next, BATCHES, "every acknowledged batch is read back");
    assert!(duplicates <= 2, "{duplicates} re-sent batches");
    eprintln!(
        "read {BATCHES} batches back from offset 0 ({duplicates} re-sent); new leader's local start {}",
        ld.local_start_offset
    );
    drop(cluster);
    drop(server);
}
