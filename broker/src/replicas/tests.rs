//! Reconciling with metadata: unchanged topics keep their state and roles; a changed
//! topic is reconciled again.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::metadata::cluster::Command;

fn state() -> ClusterState {
    let mut s = ClusterState::default();
    for id in 1..=3 {
        s.apply(Command::RegisterBroker {
            id,
            host: format!("127.0.0.{id}"),
            port: 9092,
            internal: format!("127.0.0.{id}:9093"),
            rack: None,
            listeners: Default::default(),
            now_ms: 0,
        })
        .unwrap();
    }
    for name in ["a", "b"] {
        s.apply(Command::CreateTopic {
            record: TopicRecord {
                name: name.into(),
                id: Uuid::new_v4(),
                partitions: 2,
                replication_factor: 3,
                configs: BTreeMap::new(),
                internal: false,
            },
            // Broker 1 leads partition 0 and follows broker 2 on partition 1.
            assignment: vec![vec![1, 2, 3], vec![2, 1, 3]],
        })
        .unwrap();
    }
    s
}

fn manager(dir: &Path) -> ReplicaManager {
    let config = BrokerConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        ..BrokerConfig::default()
    };
    ReplicaManager::new(config, false)
}

fn followed(a: &Applied) -> Vec<(i32, String, i32)> {
    let mut v: Vec<_> = a
        .followed
        .iter()
        .flat_map(|(l, ps)| ps.iter().map(move |p| (*l, p.topic.to_string(), p.index)))
        .collect();
    v.sort();
    v
}

#[test]
fn a_heartbeat_keeps_every_topic_and_a_leader_change_reconciles_its_topic_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let mut s = state();
    let first = m.apply(&s, true, 0);
    assert_eq!(
        followed(&first),
        vec![(2, "a".into(), 1), (2, "b".into(), 1)]
    );
    let (a, b) = (m.topic("a").unwrap(), m.topic("b").unwrap());
    assert!(a.partition(0).unwrap().is_leader());

    s.apply(Command::Heartbeat { id: 2, now_ms: 1 }).unwrap();
    let again = m.apply(&s, true, 1);
    assert!(
        Arc::ptr_eq(&a, &m.topic("a").unwrap()),
        "unchanged topic rebuilt"
    );
    assert!(Arc::ptr_eq(&b, &m.topic("b").unwrap()));
    assert_eq!(
        followed(&again),
        followed(&first),
        "what the fetchers follow stands"
    );

    // Broker 3 takes over partition 0 of `a`: only `a` is reconciled.
    s.apply(Command::ElectLeader {
        topic: "a".into(),
        partition: 0,
        leader: 3,
    })
    .unwrap();
    let moved = m.apply(&s, true, 2);
    let a2 = m.topic("a").unwrap();
    assert!(!Arc::ptr_eq(&a, &a2));
    assert!(Arc::ptr_eq(&b, &m.topic("b").unwrap()));
    assert_eq!(
        a2.partition(0).unwrap().role(),
        Role::Follower { leader: 3 }
    );
    assert!(
        Arc::ptr_eq(a.partition(0).unwrap(), a2.partition(0).unwrap()),
        "same replica, new role"
    );
    assert_eq!(
        followed(&moved),
        vec![(2, "a".into(), 1), (2, "b".into(), 1), (3, "a".into(), 0)]
    );

    // Registration changing (a restart's first reconcile) reconciles everything.
    m.apply(&s, false, 3);
    assert!(!Arc::ptr_eq(&b, &m.topic("b").unwrap()));
    assert_eq!(
        m.topic("b").unwrap().partition(0).unwrap().role(),
        Role::None
    );
}

#[test]
fn a_replica_that_failed_to_open_is_retried_while_the_metadata_stays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let mut s = state();
    // A file where the replica's directory goes: opening it fails.
    std::fs::write(dir.path().join("a-0"), b"in the way").unwrap();
    m.apply(&s, true, 0);
    assert!(m.topic("a").unwrap().partition(0).is_none());
    assert!(m.topic("a").unwrap().partition(1).is_some());
    std::fs::remove_file(dir.path().join("a-0")).unwrap();
    s.apply(Command::Heartbeat { id: 2, now_ms: 1 }).unwrap();
    m.apply(&s, true, 1);
    let a = m.topic("a").unwrap();
    assert!(a.partition(0).is_some_and(|p| p.is_leader()), "not retried");
}
