//! Tiering against a real S3-compatible server (SeaweedFS on loopback, started by the
//! e2e harness): closed segments of a remote-storage-enabled topic land in the bucket
//! byte for byte, in order, with a contiguous manifest, and uploads resume after a
//! broker restart without duplicates.

mod common;
mod tier_support;

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse};
use strata_e2e::binaries::Binaries;
use strata_e2e::s3::S3Server;
use strata_e2e::testing;
use tier_support::*;

/// Value bytes per record: 60 batches make about ten 64 KiB segments.
const VALUE: usize = 100;

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
    let cfg = config(data.path(), &info);
    let (broker, mut c) = start(cfg.clone()).await;
    // The records carry old timestamps: without retention.ms=-1, total retention
    // (which applies to the tier too) would expire them as soon as they land.
    create_topic(
        &mut c,
        "tiered",
        &[
            ("segment.bytes", "65536"),
            ("remote.storage.enable", "true"),
            ("retention.ms", "-1"),
        ],
    )
    .await;
    assert_eq!(produce(&mut c, "tiered", (0, 60), 1, VALUE).await, 0);

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

    let store = store(&info);
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

    // DescribeLogDirs shows the uploaded bytes under the tier's entry.
    let mut all = DescribeLogDirsRequest::default();
    all.topics = None;
    let dirs: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, 4, &all).await;
    let tier_dir = dirs
        .results
        .iter()
        .find(|d| d.log_dir.starts_with("tier://"))
        .expect("a tier entry");
    let uploaded: i64 = m.segments().iter().map(|s| s.size_bytes as i64).sum();
    let reported = tier_dir
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "tiered")
        .map(|t| t.partitions[0].partition_size)
        .unwrap_or(0);
    assert!(
        reported >= uploaded,
        "tier reports {reported}, uploaded {uploaded}"
    );

    // Restart; more data; the uploader continues where it stopped.
    broker.stop().await;
    let (broker, mut c) = start(cfg.clone()).await;
    assert_eq!(produce(&mut c, "tiered", (60, 120), 1, VALUE).await, 0);
    let m2 = wait_segments(m.segments().len() + 5).await;
    assert_eq!(&m2.segments()[..m.segments().len()], m.segments());
    assert!(m2
        .segments()
        .windows(2)
        .all(|w| w[0].end_offset == w[1].base_offset));
    let m3 = wait_segments(m2.segments().len()).await;
    broker.stop().await;
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
