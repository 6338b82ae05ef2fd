//! Tests of one partition's replica state: high watermark, ISR progress, acks=all
//! waits, divergence and the replication of cleaned (compacted) logs with a leader
//! and followers in temporary directories.

use super::*;
use crate::log::batch::tests::make_batch;

fn replica(dir: &std::path::Path, me: i32) -> Partition {
    let log = PartitionLog::open(dir, LogConfig::default(), true, 0).unwrap();
    Partition::new(Arc::from("t"), 0, log, me, Arc::default())
}

fn records(n: i64) -> ValidatedRecords {
    ValidatedRecords::new(&make_batch(0, 2, 1000 + n, b"v"), 1 << 20).unwrap()
}

/// Reads everything the follower should get from `leader` and appends it.
fn replicate(leader: &Partition, follower: &Partition, id: i32, now: i64) -> FollowerRead {
    let (last_epoch, leo) = follower.last_epoch_and_end();
    let read = leader
        .serve_follower(id, leader.leader_epoch(), leo, last_epoch, 1 << 20, now)
        .unwrap();
    if let FollowerRead::Data(snap) = &read {
        let data = snap.plan.read().unwrap();
        if data.is_empty() {
            follower.follower_hw(snap.high_watermark, leo);
        } else {
            let epoch = follower.leader_epoch();
            follower
                .append_replicated(
                    ValidatedRecords::from_replica(data.clone()).unwrap(),
                    snap.high_watermark,
                    now,
                    1,
                    epoch,
                )
                .unwrap();
        }
    }
    read
}

/// Replica 1 leading and replica 2 following in epoch 1, both in the ISR, with
/// three batches of two records appended at the leader (not yet replicated).
fn leader_follower_with_three_batches(
    d1: &std::path::Path,
    d2: &std::path::Path,
) -> (Partition, Partition) {
    let leader = replica(d1, 1);
    let follower = replica(d2, 2);
    leader.set_role(Role::Leader, 1, &[1, 2], &[1, 2], 0);
    follower.set_role(Role::Follower { leader: 1 }, 1, &[1, 2], &[1, 2], 0);
    for i in 0..3 {
        leader.append(records(i), 0).unwrap();
    }
    (leader, follower)
}

#[test]
fn high_watermark_is_the_isr_minimum_and_a_deposed_leader_truncates() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (leader, follower) = leader_follower_with_three_batches(d1.path(), d2.path());
    // Nothing is committed until the follower has fetched past it.
    assert_eq!(leader.high_watermark(), 0);
    assert!(matches!(
        leader.check_leader(3),
        Err(ResponseError::NotEnoughReplicas)
    ));
    replicate(&leader, &follower, 2, 1);
    assert_eq!(
        leader.high_watermark(),
        0,
        "the follower's next fetch reports progress"
    );
    assert_eq!(follower.high_watermark(), 0);
    replicate(&leader, &follower, 2, 2);
    assert_eq!(leader.high_watermark(), 6);
    assert_eq!(follower.high_watermark(), 6);

    // A stale role: answers for the old epoch are refused, not applied.
    assert!(follower.append_replicated(records(9), 6, 4, 1, 0).is_err());
    assert!(matches!(
        leader.serve_follower(2, 0, 6, 1, 1 << 20, 4),
        Err(ResponseError::FencedLeaderEpoch)
    ));

    // The old leader writes two batches nobody replicates, then loses leadership
    // to the follower (epoch 2), which writes one batch of its own.
    leader.append(records(10), 5).unwrap();
    leader.append(records(11), 5).unwrap();
    assert_eq!(leader.log_end_offset(), 10);
    follower.set_role(Role::Leader, 2, &[2], &[1, 2], 6);
    follower.append(records(20), 6).unwrap();
    leader.set_role(Role::Follower { leader: 2 }, 2, &[2], &[1, 2], 6);
    // Its last epoch (1) ends at 6 on the new leader: truncate there.
    let (last_epoch, leo) = leader.last_epoch_and_end();
    assert_eq!((last_epoch, leo), (1, 10));
    match follower
        .serve_follower(1, 2, leo, last_epoch, 1 << 20, 7)
        .unwrap()
    {
        FollowerRead::Diverging { epoch, end_offset } => {
            assert_eq!((epoch, end_offset), (1, 6));
            leader.truncate_as_follower(end_offset, 2, 2).unwrap();
        }
        FollowerRead::Data(_) => panic!("divergence not detected"),
    }
    assert_eq!(leader.log_end_offset(), 6);
    // Then it copies the new leader's batch and both logs agree.
    let (last_epoch, leo) = leader.last_epoch_and_end();
    let FollowerRead::Data(snap) = follower
        .serve_follower(1, 2, leo, last_epoch, 1 << 20, 8)
        .unwrap()
    else {
        panic!("expected data");
    };
    let data = snap.plan.read().unwrap();
    leader
        .append_replicated(
            ValidatedRecords::new(&data, usize::MAX).unwrap(),
            8,
            8,
            2,
            2,
        )
        .unwrap();
    assert_eq!(leader.last_epoch_and_end(), (2, 8));
    assert_eq!(follower.last_epoch_and_end(), (2, 8));
}

/// A leader with ISR [1, 2] and one batch appended in epoch 1.
fn leader_with_one_batch(dir: &std::path::Path) -> (Partition, i64, i32) {
    let leader = replica(dir, 1);
    leader.set_role(Role::Leader, 1, &[1, 2], &[1, 2], 0);
    let info = leader.append(records(0), 0).unwrap();
    (leader, info.last_offset + 1, info.leader_epoch)
}

#[tokio::test]
async fn acks_all_fails_after_append_when_the_isr_shrinks_below_min_isr() {
    let d = tempfile::tempdir().unwrap();
    let (leader, end, epoch) = leader_with_one_batch(d.path());
    assert_eq!(epoch, 1);
    let t = Duration::from_secs(5);
    let wait = leader.wait_for_replication(end, epoch, 2, t);
    // The follower never fetched: the controller shrinks the ISR to the leader
    // alone, and the high watermark jumps to the log end with a single copy.
    let shrink = async {
        tokio::task::yield_now().await;
        leader.set_role(Role::Leader, 1, &[1], &[1, 2], 1);
    };
    let (r, ()) = tokio::join!(wait, shrink);
    assert_eq!(leader.high_watermark(), end);
    assert_eq!(r, Err(ResponseError::NotEnoughReplicasAfterAppend));
    // With min.insync.replicas=1 the same single copy is enough.
    assert_eq!(leader.wait_for_replication(end, epoch, 1, t).await, Ok(()));
}

#[tokio::test]
async fn acks_all_fails_when_the_leader_epoch_changed_since_the_append() {
    let d = tempfile::tempdir().unwrap();
    let (leader, end, epoch) = leader_with_one_batch(d.path());
    // Re-elected in a new epoch (another replica may have led in between and
    // this broker truncated): the wait must not adopt the new epoch.
    leader.set_role(Role::Leader, 2, &[1], &[1, 2], 1);
    assert_eq!(leader.high_watermark(), end);
    let r = leader
        .wait_for_replication(end, epoch, 1, Duration::from_secs(5))
        .await;
    assert_eq!(r, Err(ResponseError::NotLeaderOrFollower));
}

#[test]
fn a_follower_that_keeps_up_under_continuous_appends_stays_in_the_isr() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let leader = replica(d1.path(), 1);
    let follower = replica(d2.path(), 2);
    leader.set_role(Role::Leader, 1, &[1, 2], &[1, 2], 0);
    follower.set_role(Role::Follower { leader: 1 }, 1, &[1, 2], &[1, 2], 0);
    let lag_max = 10_000;
    // 60 s of a fetch every 100 ms, with a new batch appended before every
    // fetch: the follower always reaches the end the leader had at its
    // previous fetch, never the current one.
    for step in 1..=600i64 {
        let now = step * 100;
        leader.append(records(step), now).unwrap();
        // Each fetch starts behind the leader's current end.
        assert!(follower.log_end_offset() < leader.log_end_offset());
        replicate(&leader, &follower, 2, now);
        assert_eq!(leader.isr_change(now, lag_max), None, "at {now} ms");
    }
    assert_eq!(leader.isr(), vec![1, 2]);

    // A follower that stops fetching still leaves after the lag period.
    let now = 60_000 + lag_max + 1;
    leader.append(records(0), now).unwrap();
    assert_eq!(leader.isr_change(now, lag_max), Some((1, vec![1])));
}

#[test]
fn a_replica_removed_and_added_back_rejoins_the_isr_only_after_it_fetches() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let leader = replica(d1.path(), 1);
    let follower = replica(d2.path(), 2);
    leader.set_role(Role::Leader, 1, &[1, 2], &[1, 2], 0);
    follower.set_role(Role::Follower { leader: 1 }, 1, &[1, 2], &[1, 2], 0);
    leader.append(records(1), 100).unwrap();
    replicate(&leader, &follower, 2, 100);
    replicate(&leader, &follower, 2, 200);
    // A reassignment completes without broker 2 (same leader epoch)...
    leader.set_role(Role::Leader, 1, &[1], &[1], 300);
    // ...and a later one adds it back: it has no replica yet, so it stays out.
    leader.set_role(Role::Leader, 1, &[1], &[1, 2], 400);
    assert_eq!(leader.isr_change(500, 10_000), None);
    replicate(&leader, &follower, 2, 600);
    assert_eq!(leader.isr_change(700, 10_000), Some((1, vec![1, 2])));
}

/// Every record of a replica's log: (offset, key, value).
fn keyed_records(p: &Partition) -> Vec<(i64, bytes::Bytes, Option<bytes::Bytes>)> {
    let mut out = Vec::new();
    p.replay_local(
        |h, one| {
            if h.is_control() || h.records_count == 0 {
                return;
            }
            let mut b = one.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
            for r in set.records {
                out.push((r.offset, r.key.unwrap(), r.value));
            }
        },
        &|| {},
    )
    .unwrap();
    out
}

#[test]
fn a_follower_replicates_a_cleaned_leader_log_gaps_included_and_cleans_to_the_same() {
    use crate::log::cleaner::{self, service::CleanableLog, CompactionConfig, Throttle};
    use crate::log::records::encode_key_values;
    let compacted = LogConfig {
        segment_bytes: 300,
        compaction: Some(CompactionConfig {
            min_cleanable_dirty_ratio_ppm: 0,
            ..CompactionConfig::default()
        }),
        ..LogConfig::default()
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |dir: &std::path::Path, me: i32| {
        let log = PartitionLog::open(dir, compacted.clone(), true, 0).unwrap();
        Partition::new(Arc::from("t"), 0, log, me, Arc::default())
    };
    let (leader, follower) = (open(d1.path(), 1), open(d2.path(), 2));
    // The follower is out of the ISR while the leader writes and cleans.
    leader.set_role(Role::Leader, 1, &[1], &[1, 2], 0);
    follower.set_role(Role::Follower { leader: 1 }, 1, &[1], &[1, 2], 0);
    for i in 0..60u8 {
        let kv = (
            bytes::Bytes::from(vec![b'k', i % 4]),
            Some(bytes::Bytes::from(vec![i])),
        );
        let raw = encode_key_values(vec![kv], 1000, None).unwrap();
        leader
            .append(ValidatedRecords::new(&raw, 1 << 20).unwrap(), 1000)
            .unwrap();
    }
    let clean = |p: &Partition| {
        let plan = p.cleaning_plan(0, 2000).unwrap();
        let (cleaned, _) = cleaner::clean(&plan, 2000, &mut Throttle::new(0)).unwrap();
        p.install_cleaned(cleaned, 2000).unwrap()
    };
    assert!(clean(&leader) > 0);
    let on_leader = keyed_records(&leader);
    assert!(on_leader.len() < 20, "{}", on_leader.len());
    // A follower starting from nothing fetches the cleaned log, gaps and all.
    for n in 0..100 {
        if follower.log_end_offset() == leader.log_end_offset() {
            break;
        }
        replicate(&leader, &follower, 2, n);
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(keyed_records(&follower), on_leader);
    // Cleaning the follower's copy itself changes nothing that the leader has not.
    follower.follower_hw(leader.high_watermark(), follower.log_end_offset());
    let _ = follower.cleaning_plan(0, 2000).map(|plan| {
        let (cleaned, _) = cleaner::clean(&plan, 2000, &mut Throttle::new(0)).unwrap();
        follower.install_cleaned(cleaned, 2000).unwrap()
    });
    let latest = |v: &[(i64, bytes::Bytes, Option<bytes::Bytes>)]| {
        let mut m = std::collections::BTreeMap::new();
        for (o, k, val) in v {
            m.insert(k.clone(), (*o, val.clone()));
        }
        m
    };
    assert_eq!(latest(&keyed_records(&follower)), latest(&on_leader));
    // And a restarted follower accepts the gaps in its log.
    drop(follower);
    let reopened = open(d2.path(), 2);
    assert_eq!(reopened.log_end_offset(), leader.log_end_offset());
}

#[test]
fn a_leader_that_crashed_before_replicating_its_first_writes_drops_them_when_it_follows() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let old = replica(d1.path(), 1);
    let new = replica(d2.path(), 2);
    old.set_role(Role::Leader, 1, &[1, 2], &[1, 2], 0);
    new.set_role(Role::Follower { leader: 1 }, 1, &[1, 2], &[1, 2], 0);
    // Written in epoch 1, never fetched by 2 (never acknowledged with acks=all).
    old.append(records(0), 0).unwrap();
    // 2 leads in epoch 2 and takes an acknowledged write at the same offset.
    new.set_role(Role::Leader, 2, &[2], &[1, 2], 1);
    new.append(records(1), 1).unwrap();
    old.set_role(Role::Follower { leader: 2 }, 2, &[2], &[1, 2], 2);
    let (last_epoch, leo) = old.last_epoch_and_end();
    assert_eq!((last_epoch, leo), (1, 2));
    // The new leader has no epoch 1 at all: epoch 1 ends where its first epoch
    // starts (Kafka's answer), so the old leader's tail from offset 0 diverges.
    let read = new
        .serve_follower(1, 2, leo, last_epoch, 1 << 20, 3)
        .unwrap();
    assert!(
        matches!(
            read,
            FollowerRead::Diverging {
                epoch: 1,
                end_offset: 0
            }
        ),
        "{read:?}"
    );
}

#[test]
fn a_new_leader_gives_no_offsets_until_its_high_watermark_reaches_its_epoch() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (old, new) = leader_follower_with_three_batches(d1.path(), d2.path());
    // The follower has every record but learns a high watermark that covers them
    // only with a later fetch; the leader changes before that.
    replicate(&old, &new, 2, 1);
    assert_eq!(new.log_end_offset(), 6);
    assert!(new.high_watermark() < 6);
    assert_eq!(old.check_offsets_available(), Ok(()));
    new.set_role(Role::Leader, 2, &[1, 2], &[1, 2], 2);
    assert_eq!(
        new.check_offsets_available(),
        Err(ResponseError::OffsetNotAvailable)
    );
    // Once the other replica fetched in the new epoch, the high watermark is at the
    // epoch's start and offsets are given again.
    old.set_role(Role::Follower { leader: 2 }, 2, &[1, 2], &[1, 2], 2);
    replicate(&new, &old, 1, 3);
    assert_eq!(new.high_watermark(), 6);
    assert_eq!(new.check_offsets_available(), Ok(()));
}
