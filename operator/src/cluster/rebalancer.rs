//! The I/O around the pure planner in [`crate::rebalance`]: when the cluster is
//! healthy and nothing else is going on, read every partition's replicas from
//! the brokers, plan a balanced assignment with minimal moves, submit it as one
//! reassignment, and follow it to the end (its id lives in the Cluster status).
//! New brokers so receive their share of existing partitions, and replicas left
//! on brokers that are gone move to live ones.

use crate::admin::{pb, Admin};
use crate::crd::cluster::{ClusterPhase, RebalanceStatus};
use crate::rebalance::{self, Broker, PartitionReplicas, Policy};

use super::rollout::{Activity, ClusterView};

/// Partition moves submitted at once; the next batch is planned when it is done.
pub const MAX_MOVES: usize = 32;

fn phase_name(p: pb::reassignment_status::Phase) -> &'static str {
    use pb::reassignment_status::Phase;
    match p {
        Phase::Unspecified | Phase::Pending => "Pending",
        Phase::Copying => "Copying",
        Phase::MovingLeadership => "MovingLeadership",
        Phase::Removing => "Removing",
        Phase::Done => "Done",
        Phase::Failed => "Failed",
    }
}

fn record(s: &pb::ReassignmentStatus) -> RebalanceStatus {
    RebalanceStatus {
        id: s.id.clone(),
        phase: phase_name(s.phase()).to_string(),
        total_moves: s.total_moves,
        completed_moves: s.completed_moves,
        message: (!s.message.is_empty()).then(|| s.message.clone()),
    }
}

/// Whether a recorded rebalance still runs.
pub fn in_progress(r: &RebalanceStatus) -> bool {
    !matches!(r.phase.as_str(), "Done" | "Failed")
}

fn activity(r: &RebalanceStatus) -> Activity {
    Activity {
        phase: ClusterPhase::Rebalancing,
        reason: "Rebalancing",
        message: format!(
            "reassignment {}: {} of {} partition moves done ({})",
            r.id, r.completed_moves, r.total_moves, r.phase
        ),
    }
}

/// Why no rebalance round may be planned now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// `spec.autoRebalance: false`.
    Disabled,
    /// No broker answered the admin API.
    NoView,
    /// A scale, drain or rolling restart is in progress (its condition reason).
    Busy(&'static str),
    /// Fewer broker pods ready than the StatefulSet has.
    PodsNotReady {
        ready: i32,
        want: i32,
    },
    /// Brokers of the StatefulSet not registered, or fenced: a plan made now
    /// would leave them out.
    NotRegistered(Vec<i32>),
    UnderReplicated(i32),
    Offline(i32),
}

impl Hold {
    /// Whether the hold goes away by itself (the cluster settles), so the
    /// controller must look again soon rather than at the next resync: a round
    /// that is due must never wait for a reconcile that nothing triggers.
    pub fn transient(&self) -> bool {
        !matches!(self, Hold::Disabled)
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Disabled => write!(f, "autoRebalance is disabled"),
            Hold::NoView => write!(f, "no broker answered the admin API"),
            Hold::Busy(reason) => write!(f, "the cluster is busy ({reason})"),
            Hold::PodsNotReady { ready, want } => {
                write!(f, "{ready} of {want} broker pods ready")
            }
            Hold::NotRegistered(ids) => write!(f, "brokers {ids:?} not registered and alive"),
            Hold::UnderReplicated(n) => write!(f, "{n} under-replicated partitions"),
            Hold::Offline(n) => write!(f, "{n} offline partitions"),
        }
    }
}

/// Whether a new rebalance round may be planned: only when the cluster is
/// settled (nothing else in progress, every broker pod ready, every broker of
/// the StatefulSet registered and alive, no partition under-replicated or
/// offline). `replicas` is the StatefulSet's broker count, `ready` its ready pods.
pub fn hold(
    enabled: bool,
    view: Option<&ClusterView>,
    activity: Option<&Activity>,
    ready: i32,
    replicas: i32,
) -> Option<Hold> {
    if !enabled {
        return Some(Hold::Disabled);
    }
    let Some(view) = view else {
        return Some(Hold::NoView);
    };
    if let Some(a) = activity {
        return Some(Hold::Busy(a.reason));
    }
    if ready < replicas {
        return Some(Hold::PodsNotReady {
            ready,
            want: replicas,
        });
    }
    let missing: Vec<i32> = (0..replicas)
        .filter(|id| !view.brokers.iter().any(|b| b.id == *id && !b.fenced))
        .collect();
    if !missing.is_empty() {
        return Some(Hold::NotRegistered(missing));
    }
    if view.offline > 0 {
        return Some(Hold::Offline(view.offline));
    }
    if view.under_replicated > 0 {
        return Some(Hold::UnderReplicated(view.under_replicated));
    }
    None
}

/// What one reconcile did about balance.
pub struct Outcome {
    /// The status to record (None: keep what is there).
    pub status: Option<RebalanceStatus>,
    pub activity: Option<Activity>,
    /// A new reassignment was submitted (for an Event): its move count.
    pub submitted: Option<usize>,
}

/// The planner's input: every partition of `topics` with its replicas (those
/// without any left out).
pub fn partition_replicas(topics: &[pb::TopicDescription]) -> Vec<PartitionReplicas> {
    topics
        .iter()
        .flat_map(|t| {
            t.partition_details.iter().map(|p| PartitionReplicas {
                topic: t.name.clone(),
                partition: p.partition,
                replicas: p.replicas.clone(),
            })
        })
        .filter(|p| !p.replicas.is_empty())
        .collect()
}

/// The brokers' replication throttle keys that carry `reassignmentThrottle`.
pub const THROTTLE_KEYS: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

/// What sets every broker's (the cluster-wide default) replication throttles to
/// `throttle` bytes/s, or removes them.
pub fn throttle_request(throttle: Option<u64>) -> pb::AlterBrokerConfigsRequest {
    let keys = THROTTLE_KEYS.iter().map(|k| k.to_string());
    match throttle {
        Some(rate) => pb::AlterBrokerConfigsRequest {
            entity: String::new(),
            set: keys.map(|k| (k, rate.to_string())).collect(),
            delete: vec![],
        },
        None => pb::AlterBrokerConfigsRequest {
            entity: String::new(),
            set: Default::default(),
            delete: keys.collect(),
        },
    }
}

/// Keeps the cluster's replication throttles at `throttle` (the brokers write
/// nothing when they already are); logs when they change.
pub async fn set_throttle(client: &mut Admin, throttle: Option<u64>) -> Result<(), tonic::Status> {
    let done = client
        .alter_broker_configs(throttle_request(throttle))
        .await?
        .into_inner();
    if done.changed {
        tracing::info!(?throttle, "set the reassignment throttle (bytes/s)");
    }
    Ok(())
}

/// Follows a running reassignment, or plans and submits the next one.
/// `replicas` is the StatefulSet's broker count: only brokers `0..replicas`
/// that are alive and not draining may receive replicas.
pub async fn step(
    client: &mut Admin,
    previous: Option<&RebalanceStatus>,
    view: &ClusterView,
    replicas: i32,
) -> Result<Outcome, tonic::Status> {
    if let Some(prev) = previous.filter(|r| in_progress(r)) {
        let now = client
            .get_reassignment(pb::GetReassignmentRequest {
                id: prev.id.clone(),
            })
            .await?
            .into_inner();
        let r = record(&now);
        let running = in_progress(&r);
        return Ok(Outcome {
            activity: running.then(|| activity(&r)),
            status: Some(r),
            submitted: None,
        });
    }
    let topics = client
        .list_topics(pb::ListTopicsRequest {
            include_internal: true,
        })
        .await?
        .into_inner()
        .topics;
    let current = partition_replicas(&topics);
    let brokers: Vec<Broker> = view
        .brokers
        .iter()
        .filter(|b| b.id < replicas && !b.draining && !b.fenced)
        .map(|b| Broker {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    let moves = rebalance::plan(
        &current,
        &brokers,
        &Policy {
            max_moves: MAX_MOVES,
        },
    );
    let mut load: std::collections::BTreeMap<i32, usize> =
        brokers.iter().map(|b| (b.id, 0)).collect();
    for r in current.iter().flat_map(|p| &p.replicas) {
        if let Some(n) = load.get_mut(r) {
            *n += 1;
        }
    }
    let uneven = load
        .values()
        .max()
        .zip(load.values().min())
        .is_some_and(|(max, min)| max - min > 1);
    if moves.is_empty() && uneven {
        // Racks or replication factors may make an even spread impossible; say so.
        tracing::warn!(replicas_per_broker = ?load, partitions = current.len(),
            "replicas are uneven but the planner found no move");
    } else if !moves.is_empty() {
        tracing::info!(replicas_per_broker = ?load, partitions = current.len(), moves = moves.len(),
            "planned a rebalance");
    }
    if moves.is_empty() {
        return Ok(Outcome {
            status: None,
            activity: None,
            submitted: None,
        });
    }
    let n = moves.len();
    let submitted = client
        .reassign_partitions(pb::ReassignPartitionsRequest {
            moves: moves
                .into_iter()
                .map(|m| pb::PartitionMove {
                    topic: m.topic,
                    partition: m.partition,
                    replicas: m.replicas,
                })
                .collect(),
        })
        .await?
        .into_inner();
    let r = record(&submitted);
    Ok(Outcome {
        activity: in_progress(&r).then(|| activity(&r)),
        status: Some(r),
        submitted: Some(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rollout::BrokerView;

    fn view(ids: &[i32], fenced: &[i32]) -> ClusterView {
        ClusterView {
            brokers: ids
                .iter()
                .map(|&id| BrokerView {
                    id,
                    rack: None,
                    draining: false,
                    fenced: fenced.contains(&id),
                    replicas: 0,
                    leaders: 0,
                    min_isr_at_risk: 0,
                })
                .collect(),
            under_replicated: 0,
            offline: 0,
            min_isr_no_spare: Vec::new(),
        }
    }

    #[test]
    fn the_throttle_sets_or_removes_both_rates_cluster_wide() {
        let set = throttle_request(Some(50 << 20));
        assert_eq!(set.entity, "");
        assert!(set.delete.is_empty());
        for k in THROTTLE_KEYS {
            assert_eq!(set.set.get(k).map(String::as_str), Some("52428800"));
        }
        let off = throttle_request(None);
        assert!(off.set.is_empty());
        assert_eq!(off.delete, THROTTLE_KEYS.map(String::from).to_vec());
    }

    #[test]
    fn a_settled_cluster_may_rebalance() {
        assert_eq!(
            hold(true, Some(&view(&[0, 1, 2, 3], &[])), None, 4, 4),
            None
        );
    }

    #[test]
    fn every_unsettled_state_holds_the_round_and_says_why() {
        let v = view(&[0, 1, 2, 3], &[]);
        assert_eq!(hold(false, Some(&v), None, 4, 4), Some(Hold::Disabled));
        assert_eq!(hold(true, None, None, 4, 4), Some(Hold::NoView));
        let busy = Activity {
            phase: ClusterPhase::Scaling,
            reason: "ScalingOut",
            message: String::new(),
        };
        assert_eq!(
            hold(true, Some(&v), Some(&busy), 4, 4),
            Some(Hold::Busy("ScalingOut"))
        );
        assert_eq!(
            hold(true, Some(&v), None, 3, 4),
            Some(Hold::PodsNotReady { ready: 3, want: 4 })
        );
        assert_eq!(
            hold(true, Some(&view(&[0, 1, 2], &[])), None, 4, 4),
            Some(Hold::NotRegistered(vec![3]))
        );
        assert_eq!(
            hold(true, Some(&view(&[0, 1, 2, 3], &[1])), None, 4, 4),
            Some(Hold::NotRegistered(vec![1]))
        );
        let mut short = v.clone();
        short.under_replicated = 2;
        assert_eq!(
            hold(true, Some(&short), None, 4, 4),
            Some(Hold::UnderReplicated(2))
        );
        short.offline = 1;
        assert_eq!(hold(true, Some(&short), None, 4, 4), Some(Hold::Offline(1)));
    }

    #[test]
    fn only_a_disabled_rebalancer_waits_for_the_resync() {
        // The stall of the manifests e2e: a round finished, the reconcile its own
        // status patch triggered saw a transiently short ISR and requeued at the
        // 5 min resync, replacing the 5 s requeue. Every hold but Disabled clears
        // by itself and must be looked at again soon.
        for h in [
            Hold::NoView,
            Hold::Busy("Draining"),
            Hold::PodsNotReady { ready: 1, want: 2 },
            Hold::NotRegistered(vec![3]),
            Hold::UnderReplicated(1),
            Hold::Offline(1),
        ] {
            assert!(h.transient(), "{h}");
        }
        assert!(!Hold::Disabled.transient());
    }
}
