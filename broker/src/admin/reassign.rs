//! The admin API's reassignments: moving partitions' replicas (`ReassignPartitions`),
//! changing a topic's replication factor, and reporting progress from the replicated
//! metadata alone, so any broker can answer for any reassignment.

use tonic::{Response, Status};

use super::pb::*;
use super::{status, AdminService};
use crate::metadata::cluster::ClusterState;

impl AdminService {
    pub(super) async fn reassign_partitions_impl(
        &self,
        r: ReassignPartitionsRequest,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        if r.moves.is_empty() {
            return Err(Status::invalid_argument(
                "a reassignment needs at least one move",
            ));
        }
        let state = self.broker.cluster();
        for m in &r.moves {
            let t = state
                .topics
                .get(&m.topic)
                .ok_or_else(|| Status::not_found(format!("unknown topic `{}`", m.topic)))?;
            let p = usize::try_from(m.partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .ok_or_else(|| {
                    Status::not_found(format!("unknown partition {}-{}", m.topic, m.partition))
                })?;
            if p.target.is_some() {
                return Err(Status::failed_precondition(format!(
                    "{}-{} is already being reassigned",
                    m.topic, m.partition
                )));
            }
            let distinct: std::collections::BTreeSet<_> = m.replicas.iter().collect();
            if m.replicas.is_empty() || distinct.len() != m.replicas.len() {
                return Err(Status::invalid_argument(format!(
                    "replicas {:?} for {}-{} must be non-empty and distinct",
                    m.replicas, m.topic, m.partition
                )));
            }
            if let Some(b) = m.replicas.iter().find(|b| !state.is_live(**b)) {
                return Err(Status::invalid_argument(format!(
                    "replicas {:?} for {}-{} name broker {b}, which is unknown or fenced",
                    m.replicas, m.topic, m.partition
                )));
            }
        }
        for m in &r.moves {
            self.broker
                .reassign(&m.topic, m.partition, m.replicas.clone())
                .await
                .map_err(status)?;
        }
        let id = encode_reassignment(&r.moves);
        Ok(Response::new(reassignment_status(
            &self.broker.cluster(),
            &id,
        )?))
    }

    pub(super) async fn set_replication_factor_impl(
        &self,
        r: SetReplicationFactorRequest,
    ) -> Result<Response<ReassignmentStatus>, Status> {
        let rf = i16::try_from(r.replication_factor)
            .ok()
            .filter(|rf| *rf >= 1)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "replication_factor must be between 1 and {}, got {}",
                    i16::MAX,
                    r.replication_factor
                ))
            })?;
        self.topic(&r.topic)?;
        let state = self.broker.cluster();
        if let Some(t) = state.topics.get(&r.topic) {
            if let Some(i) = t.partitions.iter().position(|p| p.target.is_some()) {
                // Transient (a rebalance or drain is moving it): retry later.
                return Err(Status::failed_precondition(format!(
                    "partition {}-{i} is being reassigned; change the replication factor once it is done",
                    r.topic
                )));
            }
        }
        let moves =
            crate::metadata::cluster::replication_factor_moves(&state, &r.topic, rf as usize)
                .map_err(status)?;
        let pm: Vec<PartitionMove> = moves
            .iter()
            .map(|(partition, replicas)| PartitionMove {
                topic: r.topic.clone(),
                partition: *partition,
                replicas: replicas.clone(),
            })
            .collect();
        self.broker
            .set_replication_factor(&r.topic, rf, moves)
            .await
            .map_err(status)?;
        if pm.is_empty() {
            return Ok(Response::new(ReassignmentStatus {
                id: String::new(),
                phase: reassignment_status::Phase::Done as i32,
                message: format!("every partition of `{}` has {rf} replicas", r.topic),
                ..Default::default()
            }));
        }
        let id = encode_reassignment(&pm);
        Ok(Response::new(reassignment_status(
            &self.broker.cluster(),
            &id,
        )?))
    }
}

/// A reassignment id names its moves (`topic/partition/1.2.3;...`), so any broker
/// can report its progress from the replicated metadata.
fn encode_reassignment(moves: &[PartitionMove]) -> String {
    moves
        .iter()
        .map(|m| {
            let replicas: Vec<String> = m.replicas.iter().map(i32::to_string).collect();
            format!("{}/{}/{}", m.topic, m.partition, replicas.join("."))
        })
        .collect::<Vec<_>>()
        .join(";")
}

pub(super) fn reassignment_status(
    state: &ClusterState,
    id: &str,
) -> Result<ReassignmentStatus, Status> {
    use reassignment_status::Phase;
    let bad = || Status::not_found(format!("unknown reassignment `{id}`"));
    let mut total = 0;
    let mut done = 0;
    let mut phase = Phase::Done;
    for item in id.split(';') {
        let mut parts = item.rsplitn(3, '/');
        let (Some(replicas), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let partition: usize = partition.parse().map_err(|_| bad())?;
        let target: Vec<i32> = replicas
            .split('.')
            .map(|r| r.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let p = state
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition))
            .ok_or_else(bad)?;
        total += 1;
        if p.target.is_none() && p.replicas == target {
            done += 1;
            continue;
        }
        let this = match &p.target {
            None => Phase::Failed,
            Some(t) if !t.iter().all(|r| p.isr.contains(r)) => Phase::Copying,
            Some(t) if !t.contains(&p.leader) => Phase::MovingLeadership,
            Some(_) => Phase::Removing,
        };
        if phase == Phase::Done || this == Phase::Failed {
            phase = this;
        }
    }
    Ok(ReassignmentStatus {
        id: id.to_string(),
        phase: phase as i32,
        total_moves: total,
        completed_moves: done,
        message: match phase {
            Phase::Done => "every replica is in place".into(),
            Phase::Failed => "a partition ended with replicas other than the target (a later reassignment or drain replaced it)".into(),
            _ => format!("{done} of {total} moves complete"),
        },
    })
}
