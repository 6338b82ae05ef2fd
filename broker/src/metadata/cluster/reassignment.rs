//! Reassignments as Kafka's AlterPartitionReassignments and ListPartitionReassignments
//! see them: an in-flight reassignment's replicas with those being added and removed,
//! and its cancellation, which returns the partition to the replicas it started from.
//! (Starting and completing a reassignment are the `Reassign` and
//! `CompleteReassignment` commands; the controller moves them forward.)

use super::{ClusterState, PartitionState};
use crate::metadata::MetadataError;

/// An in-flight reassignment of one partition, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// Every replica the partition has now (the original ones and the target's).
    pub replicas: Vec<i32>,
    /// Target replicas that were not replicas when it started.
    pub adding: Vec<i32>,
    /// Replicas that are not in the target.
    pub removing: Vec<i32>,
}

/// The in-flight reassignment of `p`, if any.
pub fn ongoing_reassignment(p: &PartitionState) -> Option<OngoingReassignment> {
    let target = p.target.as_ref()?;
    let origin = p.origin.as_ref().unwrap_or(&p.replicas);
    Some(OngoingReassignment {
        replicas: p.replicas.clone(),
        adding: target
            .iter()
            .copied()
            .filter(|r| !origin.contains(r))
            .collect(),
        removing: p
            .replicas
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect(),
    })
}

impl ClusterState {
    /// Applies [`super::Command::CancelReassignment`].
    pub(super) fn cancel_reassignment(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<(), MetadataError> {
        let live: Vec<i32> = self
            .brokers
            .keys()
            .copied()
            .filter(|b| self.is_live(*b))
            .collect();
        let p = self.partition_mut(topic, partition)?;
        if p.target.is_none() {
            return Err(MetadataError::InvalidConfig(format!(
                "no reassignment of {topic}-{partition} is in progress"
            )));
        }
        let origin = p.origin.clone().unwrap_or_else(|| p.replicas.clone());
        // Leadership moves into the target just before a reassignment completes; a
        // cancellation then needs a leader among the original replicas again.
        let leader = if p.leader < 0 || origin.contains(&p.leader) {
            p.leader
        } else {
            origin
                .iter()
                .copied()
                .find(|r| p.isr.contains(r) && live.contains(r))
                .ok_or_else(|| {
                    MetadataError::InvalidConfig(format!(
                        "cannot cancel the reassignment of {topic}-{partition}: its leader {} \
                         is a new replica and no original replica is in sync",
                        p.leader
                    ))
                })?
        };
        if leader != p.leader {
            p.leader = leader;
            p.leader_epoch += 1;
        }
        p.isr.retain(|r| origin.contains(r));
        p.replicas = origin;
        p.target = None;
        p.origin = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, state_with};
    use super::super::Command;
    use super::*;

    #[test]
    fn a_cancelled_reassignment_returns_to_its_original_replicas() {
        let mut s = state_with(&[(1, ""), (2, ""), (3, ""), (4, "")]);
        create(&mut s, "t", 1, 2);
        let before = s.topics["t"].partitions[0].clone();
        assert!(ongoing_reassignment(&before).is_none());
        let spare: Vec<i32> = (1..=4).filter(|b| !before.replicas.contains(b)).collect();
        let target = vec![before.replicas[1], spare[0]];
        s.apply(Command::Reassign {
            topic: "t".into(),
            partition: 0,
            target: target.clone(),
        })
        .unwrap();
        let during = ongoing_reassignment(&s.topics["t"].partitions[0]).unwrap();
        assert_eq!(
            during,
            OngoingReassignment {
                replicas: vec![before.replicas[0], before.replicas[1], spare[0]],
                adding: vec![spare[0]],
                removing: vec![before.replicas[0]],
            }
        );
        // A second target replaces the first; the origin stays.
        s.apply(Command::Reassign {
            topic: "t".into(),
            partition: 0,
            target: vec![before.replicas[1], spare[1]],
        })
        .unwrap();
        s.apply(Command::CancelReassignment {
            topic: "t".into(),
            partition: 0,
        })
        .unwrap();
        let after = &s.topics["t"].partitions[0];
        assert_eq!(after.replicas, before.replicas);
        assert_eq!(
            (after.leader, after.leader_epoch),
            (before.leader, before.leader_epoch)
        );
        assert!(after.target.is_none() && after.origin.is_none());
        assert!(s
            .apply(Command::CancelReassignment {
                topic: "t".into(),
                partition: 0,
            })
            .is_err());
        // Leadership already moved into the target: it comes back to an original replica.
        s.apply(Command::Reassign {
            topic: "t".into(),
            partition: 0,
            target: vec![spare[0], spare[1]],
        })
        .unwrap();
        s.apply(Command::ChangeIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: before.leader_epoch,
            isr: vec![before.replicas[0], before.replicas[1], spare[0], spare[1]],
        })
        .unwrap();
        s.apply(Command::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: spare[0],
        })
        .unwrap();
        s.apply(Command::CancelReassignment {
            topic: "t".into(),
            partition: 0,
        })
        .unwrap();
        let after = &s.topics["t"].partitions[0];
        assert_eq!(after.replicas, before.replicas);
        assert!(before.replicas.contains(&after.leader));
        assert_eq!(after.isr, before.replicas);
    }
}
