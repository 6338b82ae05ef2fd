//! Leader elections asked for by an operator (Kafka's ElectLeaders,
//! `kafka-leader-election`): what electing the preferred replica, or any live replica
//! when in-sync ones are gone, means for one partition, as a pure function over the
//! state. The answer is an [`Election`]; electing is an ordinary
//! [`Command::ElectLeader`], which the state machine checks once more against the
//! state it lands on.

use super::{ClusterState, Command, PartitionState};

/// Which leader an election looks for (Kafka's election types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica of the list, when it is live and in sync.
    Preferred,
    /// For an offline partition: an in-sync replica, else (when the topic allows
    /// `unclean.leader.election.enable`) any live replica.
    Unclean,
}

/// What an election asked for one partition comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// Propose this command.
    Elect(Command),
    /// The partition already has the leader asked for (ELECTION_NOT_NEEDED).
    NotNeeded,
    /// The preferred replica is not live, is draining, or is not in sync
    /// (PREFERRED_LEADER_NOT_AVAILABLE).
    PreferredNotAvailable(String),
    /// No replica may lead (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    NoEligibleLeader(String),
    /// No such topic or partition.
    Unknown,
}

fn unclean_allowed(state: &ClusterState, topic: &str) -> bool {
    state.topics.get(topic).is_some_and(|t| {
        t.record
            .configs
            .get("unclean.leader.election.enable")
            .map(String::as_str)
            == Some("true")
    })
}

/// The election `kind` asks for `topic`-`partition` in `state`.
pub fn elect(state: &ClusterState, kind: ElectionType, topic: &str, partition: i32) -> Election {
    let Some(p) = state
        .topics
        .get(topic)
        .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
    else {
        return Election::Unknown;
    };
    let usable = |b: i32| state.is_live(b) && !state.brokers.get(&b).is_some_and(|x| x.draining);
    let command = |leader: i32| {
        Election::Elect(Command::ElectLeader {
            topic: topic.to_string(),
            partition,
            leader,
        })
    };
    match kind {
        ElectionType::Preferred => {
            let Some(&preferred) = p.replicas.first() else {
                return Election::PreferredNotAvailable("the partition has no replicas".into());
            };
            if p.leader == preferred {
                return Election::NotNeeded;
            }
            if !usable(preferred) {
                return Election::PreferredNotAvailable(format!(
                    "preferred replica {preferred} is not live or is draining"
                ));
            }
            if !p.isr.contains(&preferred) {
                return Election::PreferredNotAvailable(format!(
                    "preferred replica {preferred} is not in the ISR {:?}",
                    p.isr
                ));
            }
            command(preferred)
        }
        ElectionType::Unclean => {
            if p.leader >= 0 && state.is_live(p.leader) {
                return Election::NotNeeded;
            }
            unclean(state, topic, p).map_or_else(Election::NoEligibleLeader, command)
        }
    }
}

/// The replica an unclean election of an offline partition picks.
fn unclean(state: &ClusterState, topic: &str, p: &PartitionState) -> Result<i32, String> {
    let live: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| state.is_live(*r))
        .collect();
    if let Some(r) = live.iter().copied().find(|r| p.isr.contains(r)) {
        return Ok(r);
    }
    if !unclean_allowed(state, topic) {
        return Err(format!(
            "no in-sync replica of {topic} is live and the topic does not allow \
             unclean.leader.election.enable"
        ));
    }
    live.first()
        .copied()
        .ok_or_else(|| format!("no replica of {topic} is live"))
}

/// Every partition of every topic, for an election over all partitions (Kafka's
/// null partition list).
pub fn all_partitions(state: &ClusterState) -> Vec<(String, i32)> {
    state
        .topics
        .iter()
        .flat_map(|(name, t)| (0..t.partitions.len() as i32).map(move |i| (name.clone(), i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, state_with};
    use super::*;

    #[test]
    fn preferred_and_unclean_elections() {
        let mut s = state_with(&[(1, ""), (2, ""), (3, "")]);
        create(&mut s, "t", 1, 3);
        let preferred = s.topics["t"].partitions[0].replicas[0];
        let other = s.topics["t"].partitions[0].replicas[1];
        assert_eq!(
            elect(&s, ElectionType::Preferred, "t", 0),
            Election::NotNeeded
        );
        assert_eq!(
            elect(&s, ElectionType::Preferred, "t", 7),
            Election::Unknown
        );
        assert_eq!(
            elect(&s, ElectionType::Unclean, "t", 0),
            Election::NotNeeded
        );
        s.apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: other,
        })
        .unwrap();
        let Election::Elect(cmd) = elect(&s, ElectionType::Preferred, "t", 0) else {
            panic!("preferred replica not elected");
        };
        s.apply(cmd).unwrap();
        assert_eq!(s.topics["t"].partitions[0].leader, preferred);
        // Out of the ISR: not available.
        let epoch = s.topics["t"].partitions[0].leader_epoch;
        let rest: Vec<i32> = s.topics["t"].partitions[0].replicas[1..].to_vec();
        s.apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: other,
        })
        .unwrap();
        s.apply(Command::ChangeIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: epoch + 1,
            isr: rest.clone(),
        })
        .unwrap();
        assert!(matches!(
            elect(&s, ElectionType::Preferred, "t", 0),
            Election::PreferredNotAvailable(_)
        ));
        // Offline with only the out-of-sync preferred replica live: unclean only when
        // the topic allows it.
        for b in &rest {
            s.apply(Command::FenceBroker {
                id: *b,
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
        assert!(matches!(
            elect(&s, ElectionType::Unclean, "t", 0),
            Election::NoEligibleLeader(_)
        ));
        s.apply(Command::SetTopicConfigs {
            name: "t".into(),
            configs: [("unclean.leader.election.enable".into(), "true".into())].into(),
        })
        .unwrap();
        let Election::Elect(cmd) = elect(&s, ElectionType::Unclean, "t", 0) else {
            panic!("unclean election refused");
        };
        s.apply(cmd).unwrap();
        assert_eq!(s.topics["t"].partitions[0].leader, preferred);
        assert_eq!(all_partitions(&s), vec![("t".to_string(), 0)]);
    }
}
