//! The tier's read path, local deletion and remote retention against a real
//! S3-compatible server (SeaweedFS on loopback): a consumer from offset 0 reads every
//! record byte-identical from the tier, ListOffsets finds offsets only the tier holds,
//! an object-store outage under produce load loses nothing, total retention and topic
//! deletion remove remote objects, and a corrupt object fails only its own fetch.

mod common;
mod tier_support;

use std::time::{Duration, Instant};

use strata_e2e::binaries::Binaries;
use strata_e2e::s3::S3Server;
use strata_e2e::testing;
use tier_support::*;

const MIB: i64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_from_offset_zero_reads_200_mib_back_from_s3_byte_identical() {
    if !testing::binaries_present("tier read test", &["weed"]) {
        return;
    }
    testing::init_tracing();
    let s3dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&Binaries::from_env(), s3dir.path(), "strata-read")
        .await
        .expect("SeaweedFS");
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(data.path(), &server.info);
    // A cache much smaller than the data, so the catch-up read evicts as it goes.
    cfg.tier_cache_bytes = 32 << 20;
    let (broker, mut c) = start(cfg).await;
    let value_len = 1000;
    let batch_len = make_batch(0, value_len).len() as i64;
    let batches = 200 * MIB / batch_len;
    let local_retention = 12 * MIB;
    create_topic(
        &mut c,
        "history",
        &[
            ("segment.bytes", &(4 * MIB).to_string()),
            ("remote.storage.enable", "true"),
            ("local.retention.bytes", &local_retention.to_string()),
            ("retention.ms", "-1"),
        ],
    )
    .await;
    let t = Instant::now();
    assert_eq!(
        produce(&mut c, "history", (0, batches), 8, value_len).await,
        0
    );
    eprintln!(
        "produced {batches} batches ({} MiB) in {:?}",
        batches * batch_len / MIB,
        t.elapsed()
    );
    let end = batches * RECORDS;

    // The tier takes the closed segments; local disk keeps only the tail.
    let dir = data.path().to_path_buf();
    wait_until(
        "uploads and local deletion",
        Duration::from_secs(180),
        || {
            let m = manifest(broker.cfg.admin_listen, "history");
            let (_, local_bytes) = local_segments(&dir, "history");
            let tail = m.end_offset() == Some(active_base(&dir, "history"));
            (tail && local_bytes <= (local_retention + 2 * 4 * MIB) as u64).then_some(())
        },
    )
    .await;
    let m = manifest(broker.cfg.admin_listen, "history");
    assert_eq!(m.start_offset(), Some(0));
    assert!(
        m.segments().len() >= 45,
        "{} remote segments",
        m.segments().len()
    );
    let keys = store(&server.info).list("").await.expect("list bucket");
    for seg in m.segments() {
        assert!(
            keys.iter().any(|k| k.ends_with(&seg.log_key)),
            "{} not in the bucket",
            seg.log_key
        );
    }
    let (local_n, local_bytes) = local_segments(&dir, "history");
    eprintln!(
        "remote: {} segments; local: {local_n} segments, {} MiB",
        m.segments().len(),
        local_bytes / MIB as u64
    );

    // Earliest is the tier's start; the first fetch reports it as the log start.
    assert_eq!(list_offset(&mut c, "history", -2).await, (0, 0));
    let (err, hw, log_start, _) = fetch(&mut c, "history", 0, 1 << 20).await;
    assert_eq!((err, hw, log_start), (0, end, 0));
    // A timestamp that only the tier holds: batch 7, record 3.
    assert_eq!(
        list_offset(&mut c, "history", T0 + 7 * 1000 + 3).await,
        (0, 7 * RECORDS + 3)
    );
    // A fresh consumer from offset 0 reads every record, byte-identical.
    let mut consumer = common::Client::connect(broker.cfg.kafka_listen).await;
    let (bytes, took) = consume_and_verify(&mut consumer, "history", 0, end, value_len).await;
    eprintln!(
        "catch-up read {} MiB in {took:?} ({:.0} MiB/s)",
        bytes / MIB as u64,
        bytes as f64 / MIB as f64 / took.as_secs_f64()
    );
    let metrics = broker.cfg.metrics_listen;
    assert!(
        metric(metrics, "strata_tier_fetch_bytes_total", &["history"]).await > 150.0 * MIB as f64
    );
    assert!(metric(metrics, "strata_tier_cache_misses_total", &[]).await > 0.0);
    assert!(metric(metrics, "strata_tier_cache_hits_total", &[]).await > 0.0);
    assert!(metric(metrics, "strata_tier_fetch_duration_seconds_count", &[]).await > 0.0);
    assert!(metric(metrics, "strata_tier_cache_bytes", &[]).await <= (32 << 20) as f64);
    let cache_files = std::fs::read_dir(dir.join("tier-cache"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        cache_files <= 8,
        "{cache_files} chunk files for a 32 MiB cache of 4 MiB chunks"
    );
    broker.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_outage_under_produce_load_loses_nothing_and_the_backlog_uploads_after() {
    if !testing::binaries_present("tier outage test", &["weed"]) {
        return;
    }
    testing::init_tracing();
    let outage = Duration::from_secs(
        std::env::var("STRATA_TIER_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let s3dir = tempfile::tempdir().expect("tempdir");
    let mut server = S3Server::start(&Binaries::from_env(), s3dir.path(), "strata-outage")
        .await
        .expect("SeaweedFS");
    let data = tempfile::tempdir().expect("tempdir");
    let (broker, mut c) = start(config(data.path(), &server.info)).await;
    let value_len = 200;
    create_topic(
        &mut c,
        "steady",
        &[
            ("segment.bytes", "262144"),
            ("remote.storage.enable", "true"),
            ("local.retention.bytes", "524288"),
            ("retention.ms", "-1"),
        ],
    )
    .await;
    let dir = data.path().to_path_buf();
    // Produce in the background until told to stop: ~1 MiB/s.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = broker.cfg.kafka_listen;
    let producer = tokio::spawn(async move {
        let mut c = common::Client::connect(addr).await;
        let mut i = 0i64;
        loop {
            assert_eq!(
                produce(&mut c, "steady", (i, i + 2), 2, value_len).await,
                0,
                "produce at batch {i}"
            );
            i += 2;
            tokio::select! {
                _ = &mut stop_rx => return i,
                _ = tokio::time::sleep(Duration::from_millis(40)) => {}
            }
        }
    });
    wait_until("first uploads", Duration::from_secs(60), || {
        (manifest(broker.cfg.admin_listen, "steady").segments().len() >= 3).then_some(())
    })
    .await;

    server.stop();
    let stopped = Instant::now();
    let before = manifest(broker.cfg.admin_listen, "steady");
    eprintln!(
        "S3 down with {} segments committed",
        before.segments().len()
    );
    tokio::time::sleep(outage).await;
    // Produce kept working (the producer task asserts every ack); nothing new was
    // committed, and the local segments the tier does not have are all still here.
    let during = manifest(broker.cfg.admin_listen, "steady");
    assert_eq!(
        during.end_offset(),
        before.end_offset(),
        "nothing committed while S3 is down"
    );
    let (local_n, local_bytes) = local_segments(&dir, "steady");
    assert!(
        local_bytes > 2 * 524_288,
        "local segments kept: {local_n} files, {local_bytes} bytes"
    );
    let metrics = broker.cfg.metrics_listen;
    assert!(metric(metrics, "strata_tier_upload_lag_segments", &["steady"]).await >= 2.0);
    assert!(metric(metrics, "strata_tier_upload_errors_total", &["steady"]).await >= 1.0);
    assert!(metric(metrics, "strata_tier_object_store_errors_total", &[]).await >= 1.0);

    server.restart().await.expect("SeaweedFS restart");
    eprintln!("S3 back after {:?}", stopped.elapsed());
    let _ = stop_tx.send(());
    let produced = producer.await.expect("producer");
    let end = produced * RECORDS;
    // The backlog uploads and local disk shrinks back to the tail.
    wait_until("backlog upload", Duration::from_secs(120), || {
        let m = manifest(broker.cfg.admin_listen, "steady");
        let (_, local_bytes) = local_segments(&dir, "steady");
        let caught_up = m.end_offset() == Some(active_base(&dir, "steady"));
        (caught_up && local_bytes <= 3 * 524_288).then_some(())
    })
    .await;
    let m = manifest(broker.cfg.admin_listen, "steady");
    assert_eq!(m.start_offset(), Some(0));
    assert!(m
        .segments()
        .windows(2)
        .all(|w| w[0].end_offset == w[1].base_offset));
    // Every record is there, in order, byte-identical.
    let (bytes, _) = consume_and_verify(&mut c, "steady", 0, end, value_len).await;
    eprintln!("verified {produced} batches ({bytes} bytes) after the outage");
    broker.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_corruption_and_topic_deletion_in_the_bucket() {
    if !testing::binaries_present("tier retention test", &["weed"]) {
        return;
    }
    testing::init_tracing();
    let s3dir = tempfile::tempdir().expect("tempdir");
    let server = S3Server::start(&Binaries::from_env(), s3dir.path(), "strata-retain")
        .await
        .expect("SeaweedFS");
    let data = tempfile::tempdir().expect("tempdir");
    let (broker, mut c) = start(config(data.path(), &server.info)).await;
    let value_len = 500;
    let batch_len = make_batch(0, value_len).len() as i64;
    create_topic(
        &mut c,
        "aging",
        &[
            ("segment.bytes", "131072"),
            ("remote.storage.enable", "true"),
            ("local.retention.bytes", "262144"),
            // The records carry 2023 timestamps: only size decides here.
            ("retention.ms", "-1"),
            ("retention.bytes", "1048576"),
        ],
    )
    .await;
    let batches = 3 * MIB / batch_len;
    assert_eq!(
        produce(&mut c, "aging", (0, batches), 1, value_len).await,
        0
    );
    let dir = data.path().to_path_buf();
    // Total retention (1 MiB) expires the oldest remote segments.
    let m = wait_until("remote retention", Duration::from_secs(60), || {
        let m = manifest(broker.cfg.admin_listen, "aging");
        let caught_up = m.end_offset() == Some(active_base(&dir, "aging"));
        (caught_up && m.start_offset().is_some_and(|s| s > 0)).then_some(m)
    })
    .await;
    let tier = store(&server.info);
    // The objects of expired segments go right after the manifest drops them.
    let start = m.start_offset().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stale: Vec<String> = tier
            .list("")
            .await
            .expect("list")
            .into_iter()
            .filter(|k| k.contains("aging-") && !k.ends_with(".json"))
            .filter(|k| {
                let base = k
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.split(['.', '-']).next())
                    .and_then(|b| b.parse::<i64>().ok());
                base.is_some_and(|b| b < start)
            })
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired objects remain: {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (err, earliest) = list_offset(&mut c, "aging", -2).await;
    assert_eq!(err, 0);
    assert!(earliest >= start && earliest > 0, "earliest {earliest}");
    let (err, _, log_start, _) = fetch(&mut c, "aging", 0, 1 << 20).await;
    assert_eq!(err, 1, "OFFSET_OUT_OF_RANGE below the tier's start");
    assert!(log_start >= start);
    assert!(
        metric(
            broker.cfg.metrics_listen,
            "strata_tier_remote_segments_deleted_total",
            &["aging"]
        )
        .await
            >= 1.0
    );

    // Corrupt a remote-only segment that nobody has read yet. Local retention runs
    // on its own schedule, after the upload: until it deleted the victim's local
    // copy, fetches are served from disk and never see the corruption (this is how
    // the test once failed on a busy machine).
    let m = manifest(broker.cfg.admin_listen, "aging");
    let victim = m.segments()[1].clone();
    wait_until(
        "the victim segment deleted locally",
        Duration::from_secs(60),
        || (local_start(&dir, "aging") > victim.base_offset).then_some(()),
    )
    .await;
    let mut raw = tier.get(&victim.log_key).await.expect("victim").to_vec();
    let mid = raw.len() / 2;
    for b in &mut raw[mid..mid + 32] {
        *b ^= 0x5a;
    }
    tier.put(&victim.log_key, bytes::Bytes::from(raw))
        .await
        .expect("put");
    let mut offset = victim.base_offset;
    let mut failed = None;
    while offset < victim.end_offset {
        let (err, _, _, records) = fetch(&mut c, "aging", offset, 16 << 10).await;
        if err != 0 {
            failed = Some(err);
            break;
        }
        offset = i64::from_be_bytes(records[..8].try_into().expect("8")) + RECORDS;
    }
    assert_eq!(
        failed,
        Some(-1),
        "UNKNOWN_SERVER_ERROR for the corrupt segment"
    );
    assert!(
        metric(
            broker.cfg.metrics_listen,
            "strata_tier_read_errors_total",
            &["aging", "corrupt"]
        )
        .await
            >= 1.0
    );
    // The broker keeps serving: the next remote segment, local data and produce.
    let next = &m.segments()[2];
    let (bytes, _) = consume_and_verify(
        &mut c,
        "aging",
        next.base_offset,
        next.end_offset,
        value_len,
    )
    .await;
    assert!(bytes > 0);
    assert_eq!(
        produce(&mut c, "aging", (batches, batches + 4), 1, value_len).await,
        0
    );

    // Deleting the topic removes its whole prefix from the bucket.
    delete_topic(&mut c, "aging").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = tier
            .list("")
            .await
            .map(|keys| keys.iter().filter(|k| k.contains("aging-")).count())
            .unwrap_or(usize::MAX);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} objects of the deleted topic remain"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    broker.stop().await;
    drop(server);
}
