use std::cell::Cell;
use std::sync::mpsc;

use super::*;
use crate::log::{LogConfig, PartitionLog};
use crate::partition::Role;

const T: Duration = Duration::from_secs(20);

fn config(partitions: i32) -> CoordinatorConfig {
    CoordinatorConfig {
        group: GroupConfig::default(),
        offsets_partitions: partitions,
        offsets_retention_ms: 1_000,
        max_metadata_bytes: 4096,
    }
}

fn log(dir: &std::path::Path) -> PartitionLog {
    PartitionLog::open(dir, LogConfig::default(), true, 0).unwrap()
}

/// An offsets partition on a single broker: the high watermark follows every append.
fn single(dir: &std::path::Path, index: i32) -> Arc<Partition> {
    Arc::new(Partition::standalone(
        Arc::from(OFFSETS_TOPIC),
        index,
        log(dir),
    ))
}

/// An offsets partition led by broker 1 with broker 2 in the ISR: nothing is
/// replicated until broker 2 fetches.
fn replicated(dir: &std::path::Path) -> Arc<Partition> {
    let p = Partition::new(Arc::from(OFFSETS_TOPIC), 0, log(dir), 1, Arc::default());
    p.set_role(Role::Leader, 1, &[1, 2], &[1, 2], 0);
    Arc::new(p)
}

/// Broker 2 fetches from `offset`; its next fetch tells the leader it has it all.
fn follower_fetches(p: &Partition, offset: i64) {
    p.serve_follower(2, p.leader_epoch(), offset, -1, 1 << 20, 0)
        .unwrap();
}

fn commit(group: &str, offset: i64, ts: i64) -> OffsetChange {
    (
        group.to_string(),
        "t".to_string(),
        0,
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp: ts,
        }),
    )
}

fn led(ps: &[&Arc<Partition>]) -> HashMap<i32, Arc<Partition>> {
    ps.iter().map(|p| (p.index, Arc::clone(p))).collect()
}

/// A group id whose offsets live in `partition` of `partitions`.
fn group_in(partition: i32, partitions: i32) -> String {
    (0..)
        .map(|i| format!("group-{i}"))
        .find(|g| offsets::partition_for(g, partitions) == partition)
        .unwrap()
}

#[test]
fn leadership_changes_during_maintenance_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let p = single(dir.path(), 0);
    let c = Arc::new(GroupCoordinator::new(config(1)));
    let (done_tx, done_rx) = mpsc::channel();
    let leader = {
        let (c, p, done) = (Arc::clone(&c), Arc::clone(&p), done_tx.clone());
        std::thread::spawn(move || {
            for _ in 0..200 {
                c.follow_leadership(&led(&[&p]), &|| {});
                c.follow_leadership(&HashMap::new(), &|| {});
            }
            done.send("leadership").unwrap();
        })
    };
    let maintenance = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            for i in 0..200 {
                for g in ["a", "b", "c"] {
                    c.group_or_create(g);
                    // Refused while the partition is not owned; that is fine here.
                    let _ = c.append_changes(g, vec![commit(g, i, 0)], 0);
                }
                c.maintain(10_000);
            }
            done_tx.send("maintenance").unwrap();
        })
    };
    for _ in 0..2 {
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("set_owned and maintain deadlocked");
    }
    leader.join().unwrap();
    maintenance.join().unwrap();
}

#[tokio::test]
async fn a_commit_is_invisible_until_its_replicas_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = replicated(dir.path());
    let c = GroupCoordinator::new(config(1));
    c.follow_leadership(&led(&[&p]), &|| {});
    let a = c
        .append_changes("g", vec![commit("g", 7, 0)], 0)
        .unwrap()
        .unwrap();
    // OffsetFetch reads `group_offsets`.
    assert!(c.group_offsets("g").is_empty());
    assert!(c.committed("g", "t", 0).is_none());
    follower_fetches(&p, 0);
    assert!(
        c.committed("g", "t", 0).is_none(),
        "fetched is not yet acknowledged"
    );
    follower_fetches(&p, a.end);
    c.await_durable(a, T).await.unwrap();
    assert_eq!(c.committed("g", "t", 0).map(|o| o.offset), Some(7));
    assert_eq!(c.group_offsets("g").len(), 1);
}

#[tokio::test]
async fn a_commit_that_never_replicates_is_never_visible() {
    let dir = tempfile::tempdir().unwrap();
    let p = replicated(dir.path());
    let c = GroupCoordinator::new(config(1));
    c.follow_leadership(&led(&[&p]), &|| {});

    // Timed out: the client is told to retry, and nothing shows.
    let a = c
        .append_changes("g", vec![commit("g", 7, 0)], 0)
        .unwrap()
        .unwrap();
    assert_eq!(
        c.await_durable(a, Duration::ZERO).await,
        Err(ResponseError::CoordinatorNotAvailable)
    );
    assert!(c.group_offsets("g").is_empty());

    // Leadership lost before the follower had it: the record may be truncated.
    let a = c
        .append_changes("g", vec![commit("g", 8, 0)], 0)
        .unwrap()
        .unwrap();
    p.set_role(Role::Follower { leader: 2 }, 2, &[2], &[1, 2], 0);
    assert_eq!(
        c.await_durable(a, T).await,
        Err(ResponseError::NotCoordinator)
    );
    assert!(c.group_offsets("g").is_empty());
    // The new leader's high watermark says nothing about our records.
    p.follower_hw(i64::MAX, p.log_end_offset());
    assert!(p.high_watermark() >= 2);
    assert!(c.group_offsets("g").is_empty());
}

#[tokio::test]
async fn commits_become_visible_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = replicated(dir.path());
    let c = GroupCoordinator::new(config(1));
    c.follow_leadership(&led(&[&p]), &|| {});
    let first = c
        .append_changes("g", vec![commit("g", 5, 0)], 0)
        .unwrap()
        .unwrap();
    let second = c
        .append_changes("g", vec![commit("g", 9, 0)], 0)
        .unwrap()
        .unwrap();
    follower_fetches(&p, 0);
    follower_fetches(&p, second.end);
    // The later commit's waiter wakes first; the earlier one must not win afterwards.
    c.await_durable(second, T).await.unwrap();
    c.await_durable(first, T).await.unwrap();
    assert_eq!(c.committed("g", "t", 0).map(|o| o.offset), Some(9));
}

#[test]
fn the_log_cleaner_compacts_an_offsets_partition_and_a_replay_sees_the_same_offsets() {
    use crate::log::cleaner::{self, service::CleanableLog, CompactionConfig, Throttle};
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 400,
        compaction: Some(CompactionConfig {
            min_cleanable_dirty_ratio_ppm: 0,
            ..CompactionConfig::default()
        }),
        ..LogConfig::default()
    };
    let p = Arc::new(Partition::standalone(
        Arc::from(OFFSETS_TOPIC),
        0,
        PartitionLog::open(dir.path(), cfg, true, 0).unwrap(),
    ));
    let c = GroupCoordinator::new(config(1));
    c.follow_leadership(&led(&[&p]), &|| {});
    for i in 0..50 {
        c.append_changes("g", vec![commit("g", i, 0)], 0).unwrap();
        c.append_changes("h", vec![commit("h", 100 + i, 0)], 0)
            .unwrap();
    }
    let before = p.size_bytes();
    let plan = p.cleaning_plan(0, 10).expect("closed segments to clean");
    let (cleaned, _) = cleaner::clean(&plan, 10, &mut Throttle::new(0)).unwrap();
    p.install_cleaned(cleaned, 10).unwrap();
    assert!(
        p.size_bytes() < before / 4,
        "{} of {before} bytes left",
        p.size_bytes()
    );
    let (replayed, _, _) = offsets::replay(&p, &|| {}).unwrap();
    assert_eq!(replayed.get("g", "t", 0).map(|o| o.offset), Some(49));
    assert_eq!(replayed.get("h", "t", 0).map(|o| o.offset), Some(149));
}

#[test]
fn replaying_one_offsets_partition_does_not_block_the_groups_of_another() {
    let d0 = tempfile::tempdir().unwrap();
    let d1 = tempfile::tempdir().unwrap();
    let (p0, p1) = (single(d0.path(), 0), single(d1.path(), 1));
    let (g0, g1) = (group_in(0, 2), group_in(1, 2));
    let c = Arc::new(GroupCoordinator::new(config(2)));
    c.follow_leadership(&led(&[&p0, &p1]), &|| {});
    c.append_changes(&g0, vec![commit(&g0, 4, 0)], 0).unwrap();
    c.append_changes(&g1, vec![commit(&g1, 6, 0)], 0).unwrap();
    // Partition 0 moves away and comes back: it must be replayed.
    c.follow_leadership(&led(&[&p1]), &|| {});
    assert!(c.committed(&g0, "t", 0).is_none());

    let (replaying_tx, replaying_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let loader = {
        let (c, p0, p1) = (Arc::clone(&c), Arc::clone(&p0), Arc::clone(&p1));
        std::thread::spawn(move || {
            let first = Cell::new(true);
            c.follow_leadership(&led(&[&p0, &p1]), &|| {
                if first.replace(false) {
                    replaying_tx.send(()).unwrap();
                    // Bounded, so a broken lock discipline fails the test, not hangs it.
                    let _ = go_rx.recv_timeout(Duration::from_secs(10));
                }
            });
        })
    };
    replaying_rx.recv_timeout(T).unwrap();
    // Mid-replay of partition 0, the groups of partition 1 are served.
    let (served_tx, served_rx) = mpsc::channel();
    {
        let (c, g1) = (Arc::clone(&c), g1.clone());
        std::thread::spawn(move || {
            let owned = c.is_coordinator(&g1);
            let seen = c.committed(&g1, "t", 0).map(|o| o.offset);
            c.group_or_create(&g1);
            let wrote = c.append_changes(&g1, vec![commit(&g1, 7, 0)], 0).is_ok();
            served_tx.send((owned, seen, wrote)).unwrap();
        });
    }
    let served = served_rx.recv_timeout(Duration::from_secs(5));
    assert!(
        !c.is_coordinator(&g0),
        "not coordinating before the load ends"
    );
    go_tx.send(()).unwrap();
    loader.join().unwrap();
    assert_eq!(
        served.expect("a replay blocked another partition's groups"),
        (true, Some(6), true)
    );
    assert!(c.is_coordinator(&g0));
    assert_eq!(c.committed(&g0, "t", 0).map(|o| o.offset), Some(4));
    assert_eq!(c.committed(&g1, "t", 0).map(|o| o.offset), Some(7));
}
