use super::*;
use crate::log::{LogConfig, PartitionLog, ValidatedRecords};
use crate::metadata::remote_log::RemoteSegment;
use crate::tier::catalog::LocalCatalog;

fn setup() -> (tempfile::TempDir, BrokerConfig, TopicRecord, Partition) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        tier_dir: dir.path().join("tier").to_string_lossy().into_owned(),
        ..BrokerConfig::default()
    };
    let rec = TopicRecord {
        name: "t".into(),
        id: Uuid::new_v4(),
        partitions: 1,
        replication_factor: 1,
        configs: Default::default(),
        internal: false,
    };
    let log = PartitionLog::open(&dir.path().join("t-0"), LogConfig::default(), true, 0).unwrap();
    let p = Partition::standalone(Arc::from("t"), 0, log);
    let b = crate::log::batch::tests::make_batch(0, 5, 1000, &[1; 100]);
    p.append(ValidatedRecords::new(&b, 1 << 20).unwrap(), 0)
        .unwrap();
    (dir, cfg, rec, p)
}

fn legacy(ts: i64) -> RemoteLog {
    let mut m = RemoteLog::default();
    for (b, e) in [(0, 100), (100, 250)] {
        m.commit(RemoteSegment {
            base_offset: b,
            end_offset: e,
            max_timestamp: ts,
            size_bytes: 10,
            leader_epoch: 0,
            log_key: format!("t-x/0/{b:020}.log"),
        })
        .unwrap();
    }
    m
}

#[tokio::test]
async fn a_former_manifest_file_is_adopted_by_the_quorum_once() {
    let (_dir, cfg, rec, p) = setup();
    // Recent enough that total retention (7 days by default) keeps it.
    let want = legacy(now_ms());
    let path = p.dir().join(MANIFEST_FILE);
    std::fs::write(&path, serde_json::to_vec(&want.clone()).unwrap()).unwrap();
    let catalog = Arc::new(LocalCatalog::with_topic(&rec).unwrap());
    let backend = cfg.tier_backend(&|_| None).unwrap().unwrap();
    let tier = Tier::open(&cfg, &backend, &Metrics::new().unwrap(), catalog.clone()).unwrap();
    tier.pass_partition(&rec, &p).await;
    assert_eq!(*tier.remote_log(&rec.id, &p), want.clone());
    assert!(!path.exists());
    assert!(path.with_extension("json.migrated").exists());
    // Local deletion may now reach the migrated end.
    assert_eq!(tier.log_start_offset(&rec.id, &p, 300), 0);
    // A file reappearing later does not override what the quorum holds.
    let mut other = RemoteLog::default();
    other
        .commit(RemoteSegment {
            base_offset: 0,
            end_offset: 50,
            max_timestamp: now_ms(),
            size_bytes: 1,
            leader_epoch: 0,
            log_key: "k.log".into(),
        })
        .unwrap();
    std::fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
    tier.pass_partition(&rec, &p).await;
    assert_eq!(*tier.remote_log(&rec.id, &p), want.clone());
    assert!(!path.exists());
}

#[tokio::test]
async fn the_sweep_deletes_old_unlisted_segment_objects_only() {
    let (dir, cfg, rec, p) = setup();
    let catalog = Arc::new(LocalCatalog::with_topic(&rec).unwrap());
    let backend = cfg.tier_backend(&|_| None).unwrap().unwrap();
    let tier = Tier::open(&cfg, &backend, &Metrics::new().unwrap(), catalog.clone()).unwrap();
    let prefix = uploader::partition_prefix(&rec.name, &rec.id, 0);
    let committed = RemoteSegment {
        base_offset: 0,
        end_offset: 5,
        max_timestamp: now_ms(),
        size_bytes: 3,
        leader_epoch: 0,
        log_key: uploader::segment_log_key(&prefix, 0, 0),
    };
    catalog
        .apply(Command::CommitRemoteSegment {
            topic: rec.name.clone(),
            topic_id: rec.id,
            partition: 0,
            leader_epoch: 0,
            segment: committed.clone(),
        })
        .unwrap();
    let refused = uploader::segment_log_key(&prefix, 5, 0);
    let in_flight = uploader::segment_log_key(&prefix, 5, 1);
    let manifest = format!("{prefix}/{MANIFEST_FILE}");
    let mut keys: Vec<String> = committed.keys().into();
    keys.extend([refused.clone(), in_flight.clone(), manifest.clone()]);
    for k in &keys {
        tier.store
            .put(k, bytes::Bytes::from_static(b"abc"))
            .await
            .unwrap();
    }
    // Everything was written two hours ago, except the upload in flight.
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for k in keys.iter().filter(|k| **k != in_flight) {
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("tier").join(k))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    tier.sweep_orphans(&rec, &p).await;
    let mut left = tier.store.list(&prefix).await.unwrap();
    left.sort();
    let mut want: Vec<String> = committed.keys().into();
    want.extend([in_flight, manifest]);
    want.sort();
    assert_eq!(left, want, "only the refused upload {refused} goes");
}
