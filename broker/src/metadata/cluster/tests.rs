use super::*;
use crate::metadata::remote_log::RemoteSegment;
use proptest::prelude::*;
use std::sync::Arc;
use uuid::Uuid;

pub(super) fn state_with(brokers: &[(i32, &str)]) -> ClusterState {
    let mut s = ClusterState::default();
    for (id, rack) in brokers {
        s.apply(Command::RegisterBroker {
            id: *id,
            host: format!("127.0.0.{id}"),
            port: 9092,
            internal: format!("127.0.0.{id}:9093"),
            rack: if rack.is_empty() {
                None
            } else {
                Some(rack.to_string())
            },
            listeners: Default::default(),
            now_ms: 0,
        })
        .unwrap();
    }
    s
}

fn topic(name: &str, partitions: i32, rf: i16) -> TopicRecord {
    TopicRecord {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
        internal: false,
    }
}

pub(super) fn create(s: &mut ClusterState, name: &str, partitions: i32, rf: i16) {
    let a = assign_replicas(s, partitions, rf, 0).unwrap();
    s.apply(Command::CreateTopic {
        record: topic(name, partitions, rf),
        assignment: a,
    })
    .unwrap();
}

#[test]
fn leader_failure_elects_an_in_sync_replica_with_a_new_epoch() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    create(&mut s, "t", 3, 3);
    let p0 = s.topics["t"].partitions[0].clone();
    assert_eq!(p0.leader, p0.replicas[0]);
    let dead = p0.leader;
    for b in [1, 2, 3] {
        if b != dead {
            s.apply(Command::Heartbeat {
                id: b,
                now_ms: 10_000,
            })
            .unwrap();
        }
    }
    let cmds = fence_and_elect(&s, 10_500, 6_000);
    assert!(cmds.contains(&Command::FenceBroker {
        id: dead,
        last_heartbeat_ms: Some(0)
    }));
    for c in cmds {
        s.apply(c).unwrap();
    }
    let p0 = &s.topics["t"].partitions[0];
    assert_ne!(p0.leader, dead);
    assert!(p0.leader >= 0);
    assert_eq!(p0.leader_epoch, 1);
    assert!(!p0.isr.contains(&dead));
    assert_eq!(s.offline(), 0);
    assert!(s.under_replicated() > 0);
    // Nothing more to do until something changes.
    assert!(fence_and_elect(&s, 10_600, 6_000).is_empty());
}

#[test]
fn no_unclean_election_unless_the_topic_allows_it() {
    let mut s = state_with(&[(1, ""), (2, "")]);
    create(&mut s, "t", 1, 2);
    // The ISR shrinks to the leader alone, then the leader dies.
    let p = s.topics["t"].partitions[0].clone();
    s.apply(Command::ChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        isr: vec![p.leader],
    })
    .unwrap();
    let other = p.replicas[1];
    s.apply(Command::Heartbeat {
        id: other,
        now_ms: 10_000,
    })
    .unwrap();
    for c in fence_and_elect(&s, 10_000, 6_000) {
        s.apply(c).unwrap();
    }
    assert_eq!(
        s.topics["t"].partitions[0].leader, -1,
        "offline rather than unclean"
    );
    assert_eq!(s.offline(), 1);
    let mut cfg = BTreeMap::new();
    cfg.insert(
        "unclean.leader.election.enable".to_string(),
        "true".to_string(),
    );
    s.apply(Command::SetTopicConfigs {
        name: "t".into(),
        configs: cfg,
    })
    .unwrap();
    for c in fence_and_elect(&s, 10_000, 6_000) {
        s.apply(c).unwrap();
    }
    assert_eq!(s.topics["t"].partitions[0].leader, other);
}

#[test]
fn stale_isr_changes_are_refused() {
    let mut s = state_with(&[(1, ""), (2, "")]);
    create(&mut s, "t", 1, 2);
    s.apply(Command::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: 2,
    })
    .unwrap();
    let err = s.apply(Command::ChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        isr: vec![1],
    });
    assert!(err.is_err());
    assert!(s
        .apply(Command::ChangeIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: 1,
            isr: vec![2]
        })
        .is_ok());
}

#[test]
fn reassignment_goes_through_the_union_then_the_target() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, ""), (4, "")]);
    s.apply(Command::CreateTopic {
        record: topic("t", 1, 3),
        assignment: vec![vec![1, 2, 3]],
    })
    .unwrap();
    s.apply(Command::Reassign {
        topic: "t".into(),
        partition: 0,
        target: vec![2, 3, 4],
    })
    .unwrap();
    assert_eq!(s.topics["t"].partitions[0].replicas, vec![1, 2, 3, 4]);
    s.apply(Command::ChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        isr: vec![1, 2, 3, 4],
    })
    .unwrap();
    s.apply(Command::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: 2,
    })
    .unwrap();
    s.apply(Command::CompleteReassignment {
        topic: "t".into(),
        partition: 0,
    })
    .unwrap();
    let p = &s.topics["t"].partitions[0];
    assert_eq!(p.replicas, vec![2, 3, 4]);
    assert_eq!(p.isr, vec![2, 3, 4]);
    assert_eq!(p.leader, 2);
}

#[test]
fn draining_brokers_get_no_new_replicas_and_producer_ids_never_repeat() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    s.apply(Command::SetDraining {
        id: 3,
        draining: true,
    })
    .unwrap();
    let a = assign_replicas(&s, 10, 2, 0).unwrap();
    assert!(a.iter().flatten().all(|b| *b != 3));
    assert!(assign_replicas(&s, 1, 3, 0).is_err());
    let b1 = s.apply(Command::AllocateProducerIds { broker: 1 }).unwrap();
    let b2 = s.apply(Command::AllocateProducerIds { broker: 2 }).unwrap();
    assert_eq!(
        b1,
        Applied::ProducerIdBlock {
            start: 0,
            len: PRODUCER_ID_BLOCK
        }
    );
    assert_eq!(
        b2,
        Applied::ProducerIdBlock {
            start: PRODUCER_ID_BLOCK,
            len: PRODUCER_ID_BLOCK
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Placement: distinct replicas, leaders within one of each other, and each
    /// partition spread over as many racks as possible.
    #[test]
    fn placement_is_valid_balanced_and_rack_aware(
        racks in proptest::collection::vec(0u8..3, 1..8),
        partitions in 1i32..40,
        rf in 1i16..4,
        start in 0usize..10,
    ) {
        let brokers: Vec<(i32, String)> = racks.iter().enumerate().map(|(i, r)| (i as i32 + 1, format!("r{r}"))).collect();
        let refs: Vec<(i32, &str)> = brokers.iter().map(|(i, r)| (*i, r.as_str())).collect();
        let s = state_with(&refs);
        let a = assign_replicas(&s, partitions, rf, start);
        if rf as usize > brokers.len() {
            prop_assert!(a.is_err());
            return Ok(());
        }
        let a = a.unwrap();
        prop_assert_eq!(a.len(), partitions as usize);
        let distinct_racks: BTreeSet<&str> = brokers.iter().map(|(_, r)| r.as_str()).collect();
        let mut leaders: BTreeMap<i32, usize> = brokers.iter().map(|(i, _)| (*i, 0)).collect();
        for replicas in &a {
            let set: BTreeSet<_> = replicas.iter().collect();
            prop_assert_eq!(set.len(), rf as usize);
            *leaders.get_mut(&replicas[0]).unwrap() += 1;
            let rack_of = |b: i32| brokers.iter().find(|(i, _)| *i == b).map(|(_, r)| r.as_str()).unwrap();
            let spanned: BTreeSet<&str> = replicas.iter().map(|b| rack_of(*b)).collect();
            prop_assert!(spanned.len() >= (rf as usize).min(distinct_racks.len()), "{:?} spans {:?}", replicas, spanned);
        }
        let max = leaders.values().max().unwrap();
        let min = leaders.values().min().unwrap();
        prop_assert!(max - min <= 1, "leaders unbalanced: {:?}", leaders);
    }
}

/// Runs the controller's progress loop, simulating followers catching up (the ISR
/// grows to every replica) between rounds, until nothing is left to do.
fn settle(s: &mut ClusterState) -> usize {
    for round in 0..20 {
        let names: Vec<String> = s.topics.keys().cloned().collect();
        for name in names {
            let n = s.topics[&name].partitions.len();
            for i in 0..n {
                let p = &s.topics[&name].partitions[i];
                let isr: Vec<i32> = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| s.is_live(*r))
                    .collect();
                let epoch = p.leader_epoch;
                s.apply(Command::ChangeIsr {
                    topic: name.clone(),
                    partition: i as i32,
                    leader_epoch: epoch,
                    isr,
                })
                .unwrap();
            }
        }
        let mut cmds = progress_actions(s);
        cmds.extend(preferred_leader_elections(s));
        if cmds.is_empty() {
            return round;
        }
        for c in cmds {
            s.apply(c).unwrap();
        }
    }
    panic!("controller did not settle");
}

#[test]
fn drain_moves_every_replica_and_leadership_off_the_broker() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, ""), (4, "")]);
    create(&mut s, "t", 8, 3);
    assert!(s.topics["t"]
        .partitions
        .iter()
        .any(|p| p.replicas.contains(&3)));
    s.apply(Command::SetDraining {
        id: 3,
        draining: true,
    })
    .unwrap();
    settle(&mut s);
    for p in &s.topics["t"].partitions {
        assert!(!p.replicas.contains(&3), "{p:?}");
        assert_ne!(p.leader, 3);
        assert_eq!(p.replicas.len(), 3);
        assert!(p.target.is_none());
        assert!(p.isr.contains(&p.leader));
    }
}

#[test]
fn a_broker_is_unregistered_only_once_stopped_and_empty() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, ""), (4, "")]);
    create(&mut s, "t", 8, 3);
    let unregister = Command::UnregisterBroker { id: 4 };
    // Live and holding replicas.
    assert!(s.clone().apply(unregister.clone()).is_err());
    s.apply(Command::SetDraining {
        id: 4,
        draining: true,
    })
    .unwrap();
    settle(&mut s);
    // Drained, but still heartbeating.
    let why = s.unregister_blocker(4).expect("still live");
    assert!(why.contains("still live"), "{why}");
    assert!(s.clone().apply(unregister.clone()).is_err());
    s.apply(Command::FenceBroker {
        id: 4,
        last_heartbeat_ms: None,
    })
    .unwrap();
    assert_eq!(s.unregister_blocker(4), None);
    s.apply(unregister.clone()).unwrap();
    assert!(!s.brokers.contains_key(&4));
    assert!(s.apply(unregister).is_err(), "unknown now");
    // A fenced broker that still holds replicas stays.
    s.apply(Command::FenceBroker {
        id: 3,
        last_heartbeat_ms: None,
    })
    .unwrap();
    let why = s.unregister_blocker(3).expect("holds replicas");
    assert!(why.contains("drain it first"), "{why}");
    // One that comes back registers anew.
    s.apply(Command::RegisterBroker {
        id: 4,
        host: "127.0.0.4".into(),
        port: 9092,
        rack: None,
        internal: "127.0.0.4:9093".into(),
        listeners: Default::default(),
        now_ms: 1,
    })
    .unwrap();
    assert!(s.is_live(4) && !s.brokers[&4].draining);
}

#[test]
fn partitions_at_their_min_isr_with_a_replica_to_spare_are_at_risk() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    let with_min = |name: &str, rf: i16, min: &str| {
        let mut r = topic(name, 1, rf);
        r.configs.insert("min.insync.replicas".into(), min.into());
        r
    };
    for (name, rf, min, replicas) in [
        ("roomy", 3, "2", vec![1, 2, 3]),
        ("tight", 2, "2", vec![1, 2]),
        ("never", 1, "2", vec![3]),
    ] {
        s.apply(Command::CreateTopic {
            record: with_min(name, rf, min),
            assignment: vec![replicas],
        })
        .unwrap();
    }
    // RF 3, min 2, full ISR: any one broker may stop. RF 2, min 2 and RF 1, min 2
    // have no replica to spare: waiting never helps, so they are listed instead.
    assert_eq!([1, 2, 3].map(|b| s.min_isr_at_risk(b)), [0, 0, 0]);
    let mut no_spare = s.min_isr_no_spare();
    no_spare.sort();
    assert_eq!(no_spare, vec!["never".to_string(), "tight".to_string()]);
    // The cluster-wide gauges: `tight` sits at its minimum by design and is not
    // counted; `never` (RF 1, min 2) is below it from the start.
    assert_eq!((s.at_min_isr(), s.under_min_isr()), (0, 1));
    // `roomy` loses broker 3 from its ISR: now neither 1 nor 2 may stop until it
    // is back.
    let epoch = s.topics["roomy"].partitions[0].leader_epoch;
    s.apply(Command::ChangeIsr {
        topic: "roomy".into(),
        partition: 0,
        leader_epoch: epoch,
        isr: vec![1, 2],
    })
    .unwrap();
    assert_eq!([1, 2, 3].map(|b| s.min_isr_at_risk(b)), [1, 1, 0]);
    assert_eq!((s.at_min_isr(), s.under_min_isr()), (1, 1));
    // One more replica out: acks=all writes to `roomy` now fail.
    let epoch = s.topics["roomy"].partitions[0].leader_epoch;
    s.apply(Command::ChangeIsr {
        topic: "roomy".into(),
        partition: 0,
        leader_epoch: epoch,
        isr: vec![1],
    })
    .unwrap();
    assert_eq!((s.at_min_isr(), s.under_min_isr()), (0, 2));
}

#[test]
fn replication_factor_changes_grow_onto_the_least_loaded_and_never_drop_the_leader() {
    let mut s = state_with(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]);
    create(&mut s, "t", 4, 2);
    let change = |s: &mut ClusterState, rf: usize| {
        let moves = replication_factor_moves(s, "t", rf).unwrap();
        s.apply(Command::SetReplicationFactor {
            name: "t".into(),
            replication_factor: rf as i16,
            moves,
        })
        .unwrap();
        settle(s);
    };
    change(&mut s, 3);
    let mut load: BTreeMap<i32, usize> = BTreeMap::new();
    for p in &s.topics["t"].partitions {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        assert!(p.target.is_none() && p.isr.len() == 3, "{p:?}");
        let racks: BTreeSet<_> = p
            .replicas
            .iter()
            .map(|r| s.brokers[r].rack.clone())
            .collect();
        assert_eq!(racks.len(), 2, "both racks: {p:?}");
        for r in &p.replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    assert_eq!(s.topics["t"].record.replication_factor, 3);
    // Racks come first, load second (the operator's rebalancer evens out the rest).
    let (min, max) = (load.values().min().unwrap(), load.values().max().unwrap());
    assert!(
        load.values().sum::<usize>() == 12 && max - min <= 2,
        "{load:?}"
    );
    // Shrinking keeps each partition's leader, wherever it sits in the list.
    let p0 = s.topics["t"].partitions[0].clone();
    let last = *p0.replicas.last().unwrap();
    s.apply(Command::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: last,
    })
    .unwrap();
    let leaders: Vec<i32> = s.topics["t"].partitions.iter().map(|p| p.leader).collect();
    change(&mut s, 1);
    let after: Vec<i32> = s.topics["t"]
        .partitions
        .iter()
        .map(|p| p.replicas[0])
        .collect();
    assert!(s.topics["t"]
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 1));
    assert_eq!(after, leaders);
    // Nothing to do at the same factor; too many replicas, or a move in flight: refused.
    assert!(replication_factor_moves(&s, "t", 1).unwrap().is_empty());
    assert!(replication_factor_moves(&s, "t", 5).is_err());
    assert!(replication_factor_moves(&s, "t", 0).is_err());
    assert!(replication_factor_moves(&s, "nope", 1).is_err());
    s.apply(Command::Reassign {
        topic: "t".into(),
        partition: 2,
        target: vec![1, 2],
    })
    .unwrap();
    let err = replication_factor_moves(&s, "t", 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("being reassigned"), "{err}");
}

#[test]
fn reassignment_completes_after_the_target_is_in_sync() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, ""), (4, "")]);
    s.apply(Command::CreateTopic {
        record: topic("m", 1, 3),
        assignment: vec![vec![1, 2, 3]],
    })
    .unwrap();
    s.apply(Command::Reassign {
        topic: "m".into(),
        partition: 0,
        target: vec![2, 3, 4],
    })
    .unwrap();
    // Nothing completes while broker 4 is not in the ISR.
    let before = progress_actions(&s);
    assert!(before
        .iter()
        .all(|c| !matches!(c, Command::CompleteReassignment { .. })));
    settle(&mut s);
    let p = &s.topics["m"].partitions[0];
    assert_eq!(p.replicas, vec![2, 3, 4]);
    assert!(p.target.is_none());
    assert!([2, 3, 4].contains(&p.leader));
}

fn remote_seg(base: i64, end: i64, epoch: i32) -> RemoteSegment {
    RemoteSegment {
        base_offset: base,
        end_offset: end,
        max_timestamp: base,
        size_bytes: (end - base) as u64,
        leader_epoch: epoch,
        log_key: format!("t/0/{base:020}-{epoch}.log"),
    }
}

fn commit(s: &ClusterState, epoch: i32, seg: RemoteSegment) -> Command {
    let t = &s.topics["t"];
    Command::CommitRemoteSegment {
        topic: "t".into(),
        topic_id: t.record.id,
        partition: 0,
        leader_epoch: epoch,
        segment: seg,
    }
}

fn remote_ends(s: &ClusterState) -> Vec<(i64, i64)> {
    s.topics["t"].partitions[0]
        .remote
        .segments()
        .iter()
        .map(|x| (x.base_offset, x.end_offset))
        .collect()
}

#[test]
fn remote_segments_commit_contiguously_and_only_from_the_current_leader_epoch() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    create(&mut s, "t", 1, 3);
    assert!(s.apply(commit(&s, 0, remote_seg(0, 100, 0))).is_ok());
    // The identical entry again (a retried proposal) changes nothing.
    let before = s.clone();
    assert!(s.apply(commit(&s, 0, remote_seg(0, 100, 0))).is_ok());
    assert_eq!(s, before);
    // Gaps, overlaps and empty ranges are refused.
    for bad in [
        remote_seg(150, 200, 0),
        remote_seg(50, 200, 0),
        remote_seg(100, 100, 0),
    ] {
        assert!(s.apply(commit(&s, 0, bad)).is_err());
    }
    assert_eq!(s, before, "refused commands leave the state unchanged");
    // A new leader: the deposed one's commit is refused, the new one continues.
    let old = s.topics["t"].partitions[0].leader;
    let new = s.topics["t"].partitions[0]
        .isr
        .iter()
        .copied()
        .find(|b| *b != old)
        .unwrap();
    s.apply(Command::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: new,
    })
    .unwrap();
    assert!(s.apply(commit(&s, 0, remote_seg(100, 200, 0))).is_err());
    assert!(s.apply(commit(&s, 1, remote_seg(100, 180, 1))).is_ok());
    assert_eq!(remote_ends(&s), vec![(0, 100), (100, 180)]);
    // A topic re-created under the same name does not take the old topic's commits.
    let mut wrong_id = commit(&s, 1, remote_seg(180, 200, 1));
    if let Command::CommitRemoteSegment { topic_id, .. } = &mut wrong_id {
        *topic_id = Uuid::new_v4();
    }
    assert!(s.apply(wrong_id).is_err());
    // An offline partition (every replica fenced) takes no commits.
    for id in [1, 2, 3] {
        s.apply(Command::FenceBroker {
            id,
            last_heartbeat_ms: None,
        })
        .unwrap();
    }
    s.apply(Command::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: -1,
    })
    .unwrap();
    assert!(s.apply(commit(&s, 2, remote_seg(180, 200, 2))).is_err());
}

#[test]
fn remote_retention_and_topic_deletion_go_through_the_state_machine() {
    let mut s = state_with(&[(1, "")]);
    create(&mut s, "t", 1, 1);
    for (b, e) in [(0, 10), (10, 20), (20, 30)] {
        s.apply(commit(&s, 0, remote_seg(b, e, 0))).unwrap();
    }
    let id = s.topics["t"].record.id;
    let expire = |epoch: i32, through: i64| Command::ExpireRemoteSegments {
        topic: "t".into(),
        topic_id: id,
        partition: 0,
        leader_epoch: epoch,
        through,
        log_start: None,
    };
    assert!(s.apply(expire(5, 20)).is_err(), "stale epoch");
    s.apply(expire(0, 25)).unwrap();
    assert_eq!(remote_ends(&s), vec![(20, 30)]);
    s.apply(expire(0, 25)).unwrap();
    assert_eq!(remote_ends(&s), vec![(20, 30)], "idempotent");
    s.apply(expire(0, 30)).unwrap();
    assert!(remote_ends(&s).is_empty());
    // Emptied by retention, the log still ends at 30: nothing below is taken again.
    assert!(s.apply(commit(&s, 0, remote_seg(0, 10, 0))).is_err());
    s.apply(commit(&s, 0, remote_seg(30, 40, 0))).unwrap();
    // Adopting a former manifest only works on a pristine remote log.
    let mut legacy = RemoteLog::default();
    legacy.commit(remote_seg(0, 10, 0)).unwrap();
    let adopt = |log: RemoteLog| Command::AdoptRemoteLog {
        topic: "t".into(),
        topic_id: id,
        partition: 0,
        leader_epoch: 0,
        log,
    };
    assert!(s.apply(adopt(legacy.clone())).is_err());
    // Deleting the topic leaves its remote prefix to remove, until forgotten.
    s.apply(Command::DeleteTopic { name: "t".into() }).unwrap();
    assert_eq!(s.remote_deletions.get(&id).map(String::as_str), Some("t"));
    s.apply(Command::ForgetRemoteTopic { topic_id: id })
        .unwrap();
    assert!(s.remote_deletions.is_empty());
    // A fresh topic adopts the legacy log (once; the same log again is a no-op).
    create(&mut s, "t", 1, 1);
    let id = s.topics["t"].record.id;
    let adopt = |log: RemoteLog| Command::AdoptRemoteLog {
        topic: "t".into(),
        topic_id: id,
        partition: 0,
        leader_epoch: 0,
        log,
    };
    s.apply(adopt(legacy.clone())).unwrap();
    s.apply(adopt(legacy)).unwrap();
    assert_eq!(remote_ends(&s), vec![(0, 10)]);
    // A topic that never tiered leaves nothing behind when deleted.
    create(&mut s, "plain", 1, 1);
    s.apply(Command::DeleteTopic {
        name: "plain".into(),
    })
    .unwrap();
    assert_eq!(s.remote_deletions.len(), 0);
}

/// The data loss the fault suite found: broker 3 led `t-0` and the quorum; it was
/// paused past its session; broker 2 took over the quorum, fenced it, led `t-0` and
/// acknowledged writes with ISR [1, 2]. When broker 3 woke, its controller round,
/// computed from its pre-pause view, fenced 1 and 2 and elected itself, and the new
/// controller committed that. The state machine must refuse such decisions.
#[test]
fn decisions_of_a_stale_controller_are_refused_by_the_state_machine() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    let a = vec![vec![3, 1, 2]];
    s.apply(Command::CreateTopic {
        record: topic("t", 1, 3),
        assignment: a,
    })
    .unwrap();
    assert_eq!(s.topics["t"].partitions[0].leader, 3);
    // What broker 3 saw before its pause: everyone heartbeated at 0.
    let stale = s.clone();
    // Meanwhile: 1 and 2 heartbeat, 3 is fenced and 1 leads with ISR [1, 2].
    for id in [1, 2] {
        s.apply(Command::Heartbeat { id, now_ms: 9_000 }).unwrap();
    }
    let cmds = fence_and_elect(&s, 9_000, 6_000);
    for c in cmds {
        s.apply(c).unwrap();
    }
    let p = s.topics["t"].partitions[0].clone();
    assert_eq!((p.leader, p.isr.contains(&3)), (1, false), "{p:?}");

    // Broker 3 wakes and decides from its stale view at 9 500 ms (a controller
    // counts itself alive, as controller_round does).
    let mut stale = stale;
    stale.brokers.get_mut(&3).unwrap().last_heartbeat_ms = 9_500;
    let stale_cmds = fence_and_elect(&stale, 9_500, 6_000);
    assert!(stale_cmds
        .iter()
        .any(|c| matches!(c, Command::FenceBroker { id: 1, .. })));
    let mut s2 = s.clone();
    for c in stale_cmds {
        let _ = s2.apply(c);
    }
    // Nothing it decided took effect: 1 and 2 heartbeated since, and 3 is fenced
    // and out of the ISR, so it cannot be elected.
    assert!(s2.is_live(1) && s2.is_live(2));
    assert_eq!(s2.topics["t"].partitions[0], p);
    let e = s2
        .apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: 3,
        })
        .unwrap_err();
    assert!(e.to_string().contains("fenced"), "{e}");
    // Nor can a stale view take a partition with a live in-sync replica offline.
    let e = s2
        .apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: -1,
        })
        .unwrap_err();
    assert!(e.to_string().contains("live in-sync replica"), "{e}");
}

#[test]
fn an_election_outside_the_isr_needs_unclean_election() {
    let mut s = state_with(&[(1, ""), (2, "")]);
    s.apply(Command::CreateTopic {
        record: topic("t", 1, 2),
        assignment: vec![vec![1, 2]],
    })
    .unwrap();
    s.apply(Command::ChangeIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: 0,
        isr: vec![1],
    })
    .unwrap();
    let elect2 = Command::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: 2,
    };
    let e = s.clone().apply(elect2.clone()).unwrap_err();
    assert!(e.to_string().contains("not in the ISR"), "{e}");
    // With unclean election on, the out-of-sync replica may lead.
    Arc::make_mut(s.topics.get_mut("t").unwrap())
        .record
        .configs
        .insert("unclean.leader.election.enable".into(), "true".into());
    s.apply(elect2).unwrap();
    assert_eq!(s.topics["t"].partitions[0].isr, vec![2]);
}

/// Snapshots and commands written before listeners had names and before SCRAM
/// credentials existed still load; a legacy registration serves every listener.
#[test]
fn older_snapshots_and_registrations_load() {
    let old = r#"{"brokers":{"1":{"id":1,"host":"10.0.0.1","port":9092,"rack":null,
        "internal":"10.0.0.1:9093","status":"Alive","draining":false,"last_heartbeat_ms":5}},
        "topics":{},"next_producer_id":0}"#;
    let s: ClusterState = serde_json::from_str(old).unwrap();
    assert!(s.scram_credentials.is_empty());
    let b = &s.brokers[&1];
    assert!(b.listeners.is_empty());
    assert_eq!(b.endpoint("SASL_SSL"), Some(("10.0.0.1", 9092)));
    let cmd: Command = serde_json::from_str(
        r#"{"RegisterBroker":{"id":2,"host":"h","port":1,"rack":null,"now_ms":0}}"#,
    )
    .unwrap();
    assert!(matches!(cmd, Command::RegisterBroker { ref listeners, .. } if listeners.is_empty()));
    // Written without the new fields when they are empty: older brokers read it.
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains("scram_credentials") && !json.contains("listeners"));
}

#[test]
fn named_listeners_and_scram_credentials_are_applied() {
    use crate::security::scram::{ScramCredential, ScramMechanism};
    let mut s = ClusterState::default();
    let listeners = BTreeMap::from([
        (
            "PLAIN".to_string(),
            Endpoint {
                host: "a".into(),
                port: 1,
            },
        ),
        (
            "SECURE".to_string(),
            Endpoint {
                host: "b".into(),
                port: 2,
            },
        ),
    ]);
    s.apply(Command::RegisterBroker {
        id: 1,
        host: "a".into(),
        port: 1,
        rack: None,
        internal: "a:9093".into(),
        listeners,
        now_ms: 0,
    })
    .unwrap();
    let b = &s.brokers[&1];
    assert_eq!(b.endpoint("SECURE"), Some(("b", 2)));
    assert_eq!(b.endpoint("OTHER"), None);
    let cred = |i| ScramCredential::from_salted_password(ScramMechanism::Sha256, b"s", i, &[0; 32]);
    s.apply(Command::AlterScramCredentials {
        user: "alice".into(),
        upsert: vec![(ScramMechanism::Sha256, cred(4096))],
        delete: vec![],
    })
    .unwrap();
    s.apply(Command::AlterScramCredentials {
        user: "alice".into(),
        upsert: vec![(ScramMechanism::Sha256, cred(8192))],
        delete: vec![ScramMechanism::Sha512],
    })
    .unwrap();
    assert_eq!(
        s.scram_credentials["alice"][&ScramMechanism::Sha256].iterations,
        8192
    );
    let back: ClusterState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    s.apply(Command::AlterScramCredentials {
        user: "alice".into(),
        upsert: vec![],
        delete: vec![ScramMechanism::Sha256],
    })
    .unwrap();
    assert!(s.scram_credentials.is_empty());
}

#[test]
fn dynamic_broker_configs_are_validated_replaced_whole_and_removed_when_empty() {
    let mut s = ClusterState::default();
    let set = |entity: &str, kv: &[(&str, &str)]| Command::AlterBrokerConfigs {
        entity: entity.to_string(),
        configs: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    s.apply(set("", &[("log.retention.ms", "60000")])).unwrap();
    s.apply(set("2", &[("log.segment.bytes", "1048576")]))
        .unwrap();
    assert_eq!(s.broker_configs.len(), 2);
    // A static key, a bad value or a bad entity change nothing.
    assert!(s.apply(set("2", &[("num.partitions", "3")])).is_err());
    assert!(s.apply(set("2", &[("log.retention.ms", "-5")])).is_err());
    assert!(s.apply(set("x", &[("log.retention.ms", "1")])).is_err());
    assert_eq!(s.broker_configs["2"]["log.segment.bytes"], "1048576");
    s.apply(set("2", &[])).unwrap();
    assert!(!s.broker_configs.contains_key("2"));
    // Kept in snapshots; a snapshot from before they existed still loads.
    let json = serde_json::to_string(&s).unwrap();
    let back: ClusterState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.broker_configs, s.broker_configs);
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("broker_configs");
    let loaded: ClusterState = serde_json::from_value(old).unwrap();
    assert!(loaded.broker_configs.is_empty());
}
