//! A broker whose metadata log can no longer be written (a full or failing disk)
//! exits with the reason instead of running on without its Raft core: openraft stops
//! at the first storage error and never restarts in the process, so a broker that
//! stayed up would be fenced for good, still answering as if alive.

mod common;

use std::time::Duration;

use common::{free_addr, wait_ready};
use strata_broker::config::BrokerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_metadata_log_cannot_be_written_exits_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = BrokerConfig::dev();
    cfg.data_dir = dir.path().to_path_buf();
    cfg.kafka_listen = free_addr();
    cfg.metrics_listen = free_addr();
    cfg.admin_listen = free_addr();
    let metrics = cfg.metrics_listen;
    let (_keep_running, never) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(strata_broker::app::run(cfg, async move {
        let _ = never.await;
    }));
    wait_ready(metrics).await;

    // The Raft log is appended by opening `log.jsonl` for every write; a directory in
    // its place makes the next append fail as a full disk would (ENOSPC and EISDIR
    // both reach openraft as a storage error). The broker's heartbeats append within
    // a second.
    let log = dir.path().join("meta/raft/log/log.jsonl");
    assert!(log.exists(), "raft log not at {}", log.display());
    std::fs::rename(&log, log.with_extension("moved")).expect("move the raft log");
    std::fs::create_dir(&log).expect("directory in its place");

    let ended = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the broker kept running with a stopped metadata quorum")
        .expect("broker task panicked");
    let err = ended.expect_err("the broker reported a clean exit");
    let msg = format!("{err:#}");
    assert!(msg.contains("metadata quorum stopped"), "{msg}");
}
