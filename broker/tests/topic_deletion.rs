//! Deleting a topic removes the files of each of its partitions once, from one
//! place: every partition directory goes, and the log says so once per partition,
//! with no failed or racing removals.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestBroker;
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::{CreateTopicRequest, DeleteTopicRequest};

const PARTITIONS: i32 = 64;

/// Everything the broker logs in this test process, as plain text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Names in the data directory that belong to `topic`: its partition directories
/// and their moved-aside copies awaiting deletion.
fn topic_entries(dir: &std::path::Path, topic: &str) -> Vec<String> {
    let prefix = format!("{topic}-");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_removes_each_partition_directory_once() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let b = TestBroker::start().await;
    let mut admin = AdminClient::connect(format!("http://{}", b.admin))
        .await
        .expect("connect admin");
    admin
        .create_topic(CreateTopicRequest {
            name: "doomed".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            configs: Default::default(),
            validate_only: false,
        })
        .await
        .expect("create topic");
    let started = Instant::now();
    while topic_entries(b.data_dir(), "doomed").len() < PARTITIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "partition directories not all created: {:?}",
            topic_entries(b.data_dir(), "doomed")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    admin
        .delete_topic(DeleteTopicRequest {
            name: "doomed".into(),
        })
        .await
        .expect("delete topic");
    // Per partition, not the per-topic "removed local replicas of a deleted topic".
    let removed_line =
        |l: &&str| l.contains("removed local replica ") && l.contains("topic=doomed ");
    let started = Instant::now();
    loop {
        let left = topic_entries(b.data_dir(), "doomed");
        let logged = log.text().lines().filter(removed_line).count();
        if left.is_empty() && logged >= PARTITIONS as usize {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "after 20 s, {logged} removals logged and still on disk: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop().await;

    let text = log.text();
    let removals: Vec<&str> = text.lines().filter(removed_line).collect();
    assert_eq!(
        removals.len(),
        PARTITIONS as usize,
        "one removal logged per partition:\n{}",
        removals.join("\n")
    );
    for p in 0..PARTITIONS {
        let suffix = format!("partition={p}");
        assert_eq!(
            removals
                .iter()
                .filter(|l| l.trim_end().ends_with(&suffix))
                .count(),
            1,
            "partition {p} logged once:\n{}",
            removals.join("\n")
        );
    }
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("could not remove") || l.contains("could not move"))
        .collect();
    assert!(
        failures.is_empty(),
        "removal failures:\n{}",
        failures.join("\n")
    );
}
