//! The published state shares topics with the state machine: a change copies only
//! the topics it touches, so publishing after every entry (a heartbeat) is cheap and
//! the replicas can reconcile only the topics whose `Arc` changed.

use std::sync::Arc;

use super::tests::{create, state_with};
use super::*;

#[test]
fn a_heartbeat_shares_every_topic_and_an_isr_change_copies_only_its_topic() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    create(&mut s, "a", 4, 3);
    create(&mut s, "b", 4, 3);
    let published = s.clone();
    s.apply(Command::Heartbeat { id: 2, now_ms: 1 }).unwrap();
    for t in ["a", "b"] {
        assert!(
            Arc::ptr_eq(&published.topics[t], &s.topics[t]),
            "{t} copied by a heartbeat"
        );
    }
    let p = s.topics["a"].partitions[1].clone();
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| *r != p.leader)
        .take(1)
        .chain([p.leader])
        .collect();
    s.apply(Command::ChangeIsr {
        topic: "a".into(),
        partition: 1,
        leader_epoch: p.leader_epoch,
        isr: isr.clone(),
    })
    .unwrap();
    assert!(!Arc::ptr_eq(&published.topics["a"], &s.topics["a"]));
    assert!(Arc::ptr_eq(&published.topics["b"], &s.topics["b"]));
    // The published copy still shows what was published.
    assert_eq!(published.topics["a"].partitions[1].isr, p.isr);
    assert_eq!(s.topics["a"].partitions[1].isr, isr);
}

#[test]
fn fencing_a_broker_copies_only_the_topics_whose_isr_it_was_in() {
    let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
    create(&mut s, "three", 3, 3);
    // Replicas on brokers 1 and 2 only.
    s.apply(Command::CreateTopic {
        record: TopicRecord {
            name: "two".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            replication_factor: 2,
            configs: BTreeMap::new(),
            internal: false,
        },
        assignment: vec![vec![1, 2]],
    })
    .unwrap();
    let published = s.clone();
    s.apply(Command::FenceBroker {
        id: 3,
        last_heartbeat_ms: None,
    })
    .unwrap();
    assert!(Arc::ptr_eq(&published.topics["two"], &s.topics["two"]));
    assert!(!Arc::ptr_eq(&published.topics["three"], &s.topics["three"]));
    assert!(s.topics["three"]
        .partitions
        .iter()
        .all(|p| !p.isr.contains(&3)));
    assert!(published.topics["three"]
        .partitions
        .iter()
        .all(|p| p.isr.contains(&3)));
}
