//! Replication throttles, Kafka's `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate`: bytes per second a broker serves to, and
//! fetches for, *throttled* replicas, so moving partitions does not take the disks
//! and the network from the clients.
//!
//! A replica is throttled when it is out of the ISR (in-sync replicas are never held
//! back, so `acks=all` produce is not slowed) and either
//! - its topic's `leader.replication.throttled.replicas` (on the leader's side) or
//!   `follower.replication.throttled.replicas` (on the follower's side) names it, as
//!   `kafka-reassign-partitions --throttle` writes them, or
//! - it is being added by an in-flight reassignment: Strata throttles reassignment
//!   traffic whenever a rate is set, without the lists (the operator's
//!   `reassignmentThrottle` sets only the rates).
//!
//! Each side is one budget for the whole broker, like Kafka's quota: checked before
//! throttled partitions are fetched or read, and charged with what they moved once
//! it is known, so a round may overshoot by one response and the next ones wait it
//! off. With no rate set (the default) nothing here runs per partition.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::metadata::cluster::ClusterState;
use crate::metadata::topic_config::lists_replica;

/// Which side of replication a throttle applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The leader serving a follower's fetch.
    Leader,
    /// The follower fetching from its leader.
    Follower,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Leader => "leader",
            Side::Follower => "follower",
        }
    }

    fn list_key(self) -> &'static str {
        match self {
            Side::Leader => "leader.replication.throttled.replicas",
            Side::Follower => "follower.replication.throttled.replicas",
        }
    }
}

/// A rate of `i64::MAX` or more bytes per second (Kafka's default) is no limit.
pub fn limit(rate: u64) -> Option<u64> {
    (rate < i64::MAX as u64).then_some(rate.max(1))
}

/// Whether the replica of `topic`/`partition` on broker `follower`, fetching from
/// broker `leader`, is throttled on `side` in `cluster`.
pub fn is_throttled(
    cluster: &ClusterState,
    topic: &str,
    partition: i32,
    leader: i32,
    follower: i32,
    side: Side,
) -> bool {
    let Some(t) = cluster.topics.get(topic) else {
        return false;
    };
    let Some(p) = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return false;
    };
    if p.isr.contains(&follower) {
        return false;
    }
    let adding = p.target.as_ref().is_some_and(|target| {
        let before = p.origin.as_ref().unwrap_or(&p.replicas);
        target.contains(&follower) && !before.contains(&follower)
    });
    let listed = match side {
        Side::Leader => leader,
        Side::Follower => follower,
    };
    adding || lists_replica(&t.record.configs, side.list_key(), partition, listed)
}

/// One side's byte budget: a token bucket refilled at the rate, holding at most one
/// second of it, that may go into debt by what a round moved beyond it.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: u64,
    tokens: f64,
    at: Instant,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            state: Mutex::new(Bucket {
                rate: 0,
                tokens: 0.0,
                at: Instant::now(),
            }),
        }
    }
}

impl Budget {
    /// How long throttled replicas must wait at `rate` bytes/s before they move
    /// again; `None`: they may move now.
    pub fn hold(&self, rate: u64, now: Instant) -> Option<Duration> {
        let mut b = self.state.lock();
        if b.rate != rate {
            // A new rate starts with one second of it, and forgets older debt.
            *b = Bucket {
                rate,
                tokens: rate as f64,
                at: now,
            };
        }
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate as f64).min(rate as f64);
        b.at = now;
        (b.tokens <= 0.0).then(|| Duration::from_secs_f64(-b.tokens / rate as f64 + 0.001))
    }

    /// Charges `bytes` moved for throttled replicas.
    pub fn charge(&self, bytes: u64) {
        self.state.lock().tokens -= bytes as f64;
    }
}

/// The broker's two budgets.
#[derive(Debug, Default)]
pub struct Throttles {
    pub leader: Budget,
    pub follower: Budget,
}

impl Throttles {
    pub fn budget(&self, side: Side) -> &Budget {
        match side {
            Side::Leader => &self.leader,
            Side::Follower => &self.follower,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::metadata::cluster::{PartitionState, TopicMeta};
    use crate::metadata::TopicRecord;

    fn cluster(configs: &[(&str, &str)], p: PartitionState) -> ClusterState {
        let mut c = ClusterState::default();
        let record = TopicRecord {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            partitions: 1,
            replication_factor: 2,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            internal: false,
        };
        c.topics.insert(
            "t".into(),
            Arc::new(TopicMeta {
                record,
                partitions: vec![p],
            }),
        );
        c
    }

    fn partition(replicas: &[i32], isr: &[i32], target: Option<&[i32]>) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 1,
            isr: isr.to_vec(),
            target: target.map(<[i32]>::to_vec),
            origin: target.map(|_| replicas[..replicas.len() - 1].to_vec()),
            remote: Default::default(),
        }
    }

    #[test]
    fn replicas_being_added_are_throttled_until_in_sync() {
        // 0 → 1 moving: replicas are the union [0, 1] while 1 catches up.
        let c = cluster(&[], partition(&[0, 1], &[0], Some(&[1])));
        for side in [Side::Leader, Side::Follower] {
            assert!(is_throttled(&c, "t", 0, 0, 1, side));
        }
        let synced = cluster(&[], partition(&[0, 1], &[0, 1], Some(&[1])));
        assert!(!is_throttled(&synced, "t", 0, 0, 1, Side::Follower));
        // A lagging replica that nobody moves or lists is not throttled.
        let lagging = cluster(&[], partition(&[0, 1], &[0], None));
        assert!(!is_throttled(&lagging, "t", 0, 0, 1, Side::Follower));
        assert!(!is_throttled(&lagging, "other", 0, 0, 1, Side::Follower));
        assert!(!is_throttled(&lagging, "t", 5, 0, 1, Side::Follower));
    }

    #[test]
    fn the_lists_name_leaders_and_followers_as_kafka_reassign_partitions_writes_them() {
        let c = cluster(
            &[
                ("leader.replication.throttled.replicas", "0:0"),
                ("follower.replication.throttled.replicas", "0:2"),
            ],
            partition(&[0, 1, 2], &[0, 1], None),
        );
        assert!(is_throttled(&c, "t", 0, 0, 2, Side::Leader));
        assert!(is_throttled(&c, "t", 0, 0, 2, Side::Follower));
        // Leader 1 is not listed on the leader side; follower 1 is in sync.
        assert!(!is_throttled(&c, "t", 0, 1, 2, Side::Leader));
        assert!(!is_throttled(&c, "t", 0, 0, 1, Side::Follower));
        let all = cluster(
            &[("follower.replication.throttled.replicas", "*")],
            partition(&[0, 1], &[0], None),
        );
        assert!(is_throttled(&all, "t", 0, 0, 1, Side::Follower));
        assert!(!is_throttled(&all, "t", 0, 0, 1, Side::Leader));
    }

    #[test]
    fn a_budget_lets_one_second_through_then_holds_for_the_debt() {
        let b = Budget::default();
        let t0 = Instant::now();
        assert_eq!(b.hold(1000, t0), None);
        b.charge(3000);
        // 2000 bytes of debt at 1000 B/s: two seconds.
        let wait = b.hold(1000, t0).unwrap();
        assert!((1.99..2.01).contains(&wait.as_secs_f64()), "{wait:?}");
        assert!(b.hold(1000, t0 + Duration::from_millis(1500)).is_some());
        assert_eq!(b.hold(1000, t0 + Duration::from_millis(2100)), None);
        // A long idle time earns one second, no more.
        assert_eq!(b.hold(1000, t0 + Duration::from_secs(60)), None);
        b.charge(1500);
        assert!(b.hold(1000, t0 + Duration::from_secs(60)).is_some());
        // A new rate starts afresh.
        assert_eq!(b.hold(5000, t0 + Duration::from_secs(60)), None);
        assert_eq!(limit(i64::MAX as u64), None);
        assert_eq!(limit(0), Some(1));
        assert_eq!(limit(10), Some(10));
    }
}
