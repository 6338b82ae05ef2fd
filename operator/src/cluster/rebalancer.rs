//! The I/O around the pure planner in [`crate::rebalance`]: when the cluster is
//! healthy and nothing else is going on, read every partition's replicas from
//! the brokers, plan a balanced assignment with minimal moves, submit it as one
//! reassignment, and follow it to the end (its id lives in the Cluster status).
//! New brokers so receive their share of existing partitions, and replicas left
//! on brokers that are gone move to live ones.

use tonic::transport::Channel;

use crate::admin::{pb, AdminClient};
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

/// Follows a running reassignment, or plans and submits the next one.
/// `replicas` is the StatefulSet's broker count: only brokers `0..replicas`
/// that are alive and not draining may receive replicas.
pub async fn step(
    client: &mut AdminClient<Channel>,
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
