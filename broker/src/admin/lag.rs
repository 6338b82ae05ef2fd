//! Consumer-group lag for the admin API, across the cluster: the coordinator
//! knows the committed offsets, but the end offset (high watermark) of a
//! partition is only known where a replica lives. Partitions this broker holds
//! no replica of are asked of their leader (its admin `DescribeTopic`, one call
//! per topic and leader), so `DescribeGroup` — and through it the operator's
//! ConsumerGroup status and the HPA's lag metric — covers every partition, not
//! only the coordinator's own.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::debug;

use super::pb::{DescribeTopicRequest, PartitionLag, TopicDescription};
use crate::broker::Broker;

/// How long one leader gets to answer before its partitions are left out.
const LEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Lag of every partition `group` has committed offsets for. A partition whose
/// end offset cannot be learnt (no leader, leader unreachable) is left out, as
/// Kafka's tools do, rather than reported with a made-up lag.
pub async fn group_lag(broker: &Broker, group: &str) -> Vec<PartitionLag> {
    let state = broker.cluster();
    let mut remote: BTreeMap<(i32, String), Option<TopicDescription>> = BTreeMap::new();
    let mut out = Vec::new();
    for ((topic, partition), committed) in broker.groups.group_offsets(group) {
        let local = broker
            .replicas
            .topic(&topic)
            .and_then(|t| t.partition(partition).map(|p| p.high_watermark()));
        let end = match local {
            Some(end) => Some(end),
            None => {
                let leader = state
                    .topics
                    .get(&topic)
                    .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
                    .map(|p| p.leader)
                    .filter(|l| *l >= 0 && *l != broker.node_id());
                match leader.and_then(|l| state.brokers.get(&l)) {
                    None => None,
                    Some(b) => {
                        let key = (b.id, topic.clone());
                        if !remote.contains_key(&key) {
                            let d = describe_at(broker, &b.internal, &topic).await;
                            remote.insert(key.clone(), d);
                        }
                        remote
                            .get(&key)
                            .and_then(Option::as_ref)
                            .and_then(|d| {
                                d.partition_details
                                    .iter()
                                    .find(|p| p.partition == partition)
                            })
                            .map(|p| p.high_watermark)
                            .filter(|hw| *hw >= 0)
                    }
                }
            }
        };
        if let Some(end) = end {
            out.push(PartitionLag {
                topic,
                partition,
                committed_offset: committed.offset,
                end_offset: end,
                lag: (end - committed.offset).max(0),
            });
        }
    }
    out
}

/// The leader's own description of `topic` (its high watermarks), if it answers.
async fn describe_at(broker: &Broker, addr: &str, topic: &str) -> Option<TopicDescription> {
    let mut client = super::peer_admin(broker, addr).ok()?;
    let mut request = tonic::Request::new(DescribeTopicRequest {
        name: topic.to_string(),
    });
    request.set_timeout(LEADER_TIMEOUT);
    match client.describe_topic(request).await {
        Ok(r) => Some(r.into_inner()),
        Err(e) => {
            debug!(addr, topic, error = %e, "leader did not describe the topic; its partitions' lag is left out");
            None
        }
    }
}
