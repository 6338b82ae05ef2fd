//! ElectLeaders (`kafka-leader-election`, `Admin.electLeaders`): elects each asked
//! partition's preferred replica, or for an offline partition an in-sync replica and,
//! only when the topic allows `unclean.leader.election.enable`, any live one. The
//! decision is `metadata::cluster::election`; the election itself is the controller's
//! ordinary `ElectLeader` command, proposed through the metadata quorum from whichever
//! broker got the request, and answered once this broker has applied it. No
//! partition list means every partition; those that already have the asked-for
//! leader are then left out of the answer, as in Kafka.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use tracing::info;

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::cluster::election::{self, Election, ElectionType};
use crate::metadata::MetadataError;

/// How long an election's commit may take to show in this broker's applied state.
const APPLY_WAIT: Duration = Duration::from_secs(5);

pub async fn handle(
    broker: &Arc<Broker>,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let kind = match (version, req.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        _ => {
            resp.error_code = ResponseError::InvalidRequest.code();
            return resp;
        }
    };
    let state = broker.cluster();
    let every = req.topic_partitions.is_none();
    let asked: Vec<(String, i32)> = match req.topic_partitions {
        None => election::all_partitions(&state),
        Some(tps) => tps
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect(),
    };
    let mut results: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition) in asked {
        let (error, message) = match election::elect(&state, kind, &topic, partition) {
            Election::Elect(cmd) => match propose(broker, cmd).await {
                Ok(()) => {
                    info!(%topic, partition, ?kind, "leader elected on request");
                    (None, None)
                }
                Err(e @ MetadataError::Quorum(_)) => {
                    (Some(metadata_error_code(&e)), Some(e.to_string()))
                }
                // The state moved on between the decision and the commit.
                Err(e) => (Some(not_available(kind)), Some(e.to_string())),
            },
            Election::NotNeeded if every => continue,
            Election::NotNeeded => (Some(ResponseError::ElectionNotNeeded), None),
            Election::PreferredNotAvailable(m) => {
                (Some(ResponseError::PreferredLeaderNotAvailable), Some(m))
            }
            Election::NoEligibleLeader(m) => {
                (Some(ResponseError::EligibleLeadersNotAvailable), Some(m))
            }
            Election::Unknown => (Some(ResponseError::UnknownTopicOrPartition), None),
        };
        let mut r = PartitionResult::default();
        r.partition_id = partition;
        r.error_code = error.map_or(0, |e| e.code());
        r.error_message = message.map(str_bytes);
        results.entry(topic).or_default().push(r);
    }
    resp.replica_election_results = results
        .into_iter()
        .map(|(topic, partition_result)| {
            let mut t = ReplicaElectionResult::default();
            t.topic = TopicName(str_bytes(topic));
            t.partition_result = partition_result;
            t
        })
        .collect();
    resp
}

fn not_available(kind: ElectionType) -> ResponseError {
    match kind {
        ElectionType::Preferred => ResponseError::PreferredLeaderNotAvailable,
        ElectionType::Unclean => ResponseError::EligibleLeadersNotAvailable,
    }
}

async fn propose(
    broker: &Broker,
    cmd: crate::metadata::cluster::Command,
) -> Result<(), MetadataError> {
    let (index, _) = broker.quorum.propose(cmd).await?;
    broker.quorum.wait_applied(index, APPLY_WAIT).await;
    Ok(())
}
