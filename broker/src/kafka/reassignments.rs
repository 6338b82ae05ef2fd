//! AlterPartitionReassignments and ListPartitionReassignments
//! (`kafka-reassign-partitions --execute/--verify/--cancel/--list`), mapped onto
//! Strata's own reassignment: a target replica list becomes the `Reassign` command
//! (new replicas join, catch up into the ISR, leadership moves into the target, the
//! controller completes it), no replica list becomes `CancelReassignment` (back to the
//! replicas it started from). Any broker proposes them through the metadata quorum and
//! answers once it has applied them; the listing comes from the replicated metadata.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use tracing::info;

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::cluster::{ongoing_reassignment, ClusterState, Command, PartitionState};
use crate::metadata::MetadataError;

/// How long a cancellation's commit may take to show in this broker's applied state.
const APPLY_WAIT: Duration = Duration::from_secs(5);

type Outcome = Result<(), (ResponseError, String)>;

pub async fn alter(
    broker: &Arc<Broker>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    // v1 (KIP-860): whether a reassignment may change the replication factor.
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    resp.allow_replication_factor_change = allow_rf_change;
    for t in req.topics {
        let topic = t.name.0.to_string();
        let mut tr = ReassignableTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let state = broker.cluster();
            let replicas = p
                .replicas
                .map(|r| r.into_iter().map(|b| b.0).collect::<Vec<i32>>());
            let outcome = match check(&state, &topic, p.partition_index) {
                Err(e) => Err(e),
                Ok(current) => match replicas {
                    None => cancel(broker, current, &topic, p.partition_index).await,
                    Some(target) => {
                        start(
                            broker,
                            &state,
                            current,
                            &topic,
                            p.partition_index,
                            target,
                            allow_rf_change,
                        )
                        .await
                    }
                },
            };
            let mut pr = ReassignablePartitionResponse::default();
            pr.partition_index = p.partition_index;
            if let Err((code, message)) = outcome {
                pr.error_code = code.code();
                pr.error_message = Some(str_bytes(message));
            }
            tr.partitions.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}

/// The partition as the metadata has it.
fn check<'a>(
    state: &'a ClusterState,
    topic: &str,
    partition: i32,
) -> Result<&'a PartitionState, (ResponseError, String)> {
    state
        .topics
        .get(topic)
        .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
        .ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("unknown partition {topic}-{partition}"),
            )
        })
}

async fn start(
    broker: &Broker,
    state: &ClusterState,
    current: &PartitionState,
    topic: &str,
    partition: i32,
    target: Vec<i32>,
    allow_rf_change: bool,
) -> Outcome {
    let invalid = |why: String| {
        Err((
            ResponseError::InvalidReplicaAssignment,
            format!("replicas {target:?} for {topic}-{partition}: {why}"),
        ))
    };
    let distinct: BTreeSet<i32> = target.iter().copied().collect();
    if target.is_empty() || distinct.len() != target.len() {
        return invalid("must be non-empty and distinct".into());
    }
    if let Some(b) = target.iter().find(|b| !state.is_live(**b)) {
        return invalid(format!("broker {b} is unknown or fenced"));
    }
    let rf = current.origin.as_ref().unwrap_or(&current.replicas).len();
    if !allow_rf_change && target.len() != rf {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "{topic}-{partition} has {rf} replicas; the request does not allow changing \
                 the replication factor to {}",
                target.len()
            ),
        ));
    }
    broker
        .reassign(topic, partition, target.clone())
        .await
        .map_err(|e| error(&e))?;
    info!(%topic, partition, ?target, "reassignment started (AlterPartitionReassignments)");
    Ok(())
}

async fn cancel(broker: &Broker, current: &PartitionState, topic: &str, partition: i32) -> Outcome {
    if current.target.is_none() {
        return Err((
            ResponseError::NoReassignmentInProgress,
            format!("no reassignment of {topic}-{partition} is in progress"),
        ));
    }
    let cmd = Command::CancelReassignment {
        topic: topic.to_string(),
        partition,
    };
    let (index, _) = broker.quorum.propose(cmd).await.map_err(|e| error(&e))?;
    broker.quorum.wait_applied(index, APPLY_WAIT).await;
    info!(%topic, partition, "reassignment cancelled (AlterPartitionReassignments)");
    Ok(())
}

fn error(e: &MetadataError) -> (ResponseError, String) {
    let code = match e {
        MetadataError::InvalidConfig(_) | MetadataError::InvalidReplicationFactor(_) => {
            ResponseError::InvalidReplicaAssignment
        }
        other => metadata_error_code(other),
    };
    (code, e.to_string())
}

pub async fn list(
    broker: &Arc<Broker>,
    req: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    let mut resp = ListPartitionReassignmentsResponse::default();
    let state = broker.cluster();
    // No list: every partition; otherwise the asked ones (unknown ones are skipped).
    let asked: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => state.topics.keys().map(|t| (t.clone(), None)).collect(),
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes)))
            .collect(),
    };
    for (topic, partitions) in asked {
        let Some(meta) = state.topics.get(&topic) else {
            continue;
        };
        let indexes: Vec<i32> =
            partitions.unwrap_or_else(|| (0..meta.partitions.len() as i32).collect());
        let mut tr = OngoingTopicReassignment::default();
        tr.name = kafka_protocol::messages::TopicName(str_bytes(topic.clone()));
        for i in indexes {
            let Some(p) = usize::try_from(i).ok().and_then(|u| meta.partitions.get(u)) else {
                continue;
            };
            let Some(r) = ongoing_reassignment(p) else {
                continue;
            };
            let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
            let mut pr = OngoingPartitionReassignment::default();
            pr.partition_index = i;
            pr.replicas = ids(r.replicas);
            pr.adding_replicas = ids(r.adding);
            pr.removing_replicas = ids(r.removing);
            tr.partitions.push(pr);
        }
        if !tr.partitions.is_empty() {
            resp.topics.push(tr);
        }
    }
    resp
}
