//! DescribeTopicPartitions (KIP-966; the Java 4.x AdminClient's `describeTopics`,
//! hence `kafka-topics --describe`): topics and their partitions from the replicated
//! metadata, paged by a partition limit and a cursor (topic name, first partition) so
//! a topic with many partitions spans several responses. Topics go in name order; no
//! topic list means every topic. Strata has no eligible leader replicas (KIP-966's
//! ELR), so those lists are empty, as a Kafka broker without ELR sends them.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::str_bytes;
use crate::broker::Broker;
use crate::metadata::cluster::{ClusterState, PartitionState};

/// The most partitions one response carries (Kafka's
/// `max.request.partition.size.limit` default).
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub async fn handle(
    broker: &Arc<Broker>,
    req: DescribeTopicPartitionsRequest,
    _version: i16,
) -> DescribeTopicPartitionsResponse {
    page(&broker.cluster(), req)
}

/// One page of the answer, from `state`.
pub fn page(
    state: &ClusterState,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let mut resp = DescribeTopicPartitionsResponse::default();
    let limit = match req.response_partition_limit {
        n if n > 0 => n.min(MAX_PARTITIONS_PER_RESPONSE),
        _ => MAX_PARTITIONS_PER_RESPONSE,
    };
    let mut names: Vec<String> = if req.topics.is_empty() {
        state.topics.keys().cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let cursor = req
        .cursor
        .map(|c| (c.topic_name.0.to_string(), c.partition_index.max(0)));
    if let Some((topic, _)) = &cursor {
        names.retain(|n| n >= topic);
    }
    let mut remaining = limit as usize;
    for name in names {
        let Some(meta) = state.topics.get(&name) else {
            let mut t = DescribeTopicPartitionsResponseTopic::default();
            t.error_code = ResponseError::UnknownTopicOrPartition.code();
            t.name = Some(TopicName(str_bytes(name)));
            resp.topics.push(t);
            continue;
        };
        let first = match &cursor {
            Some((topic, p)) if *topic == name => (*p as usize).min(meta.partitions.len()),
            _ => 0,
        };
        if remaining == 0 {
            resp.next_cursor = Some(next(&name, first));
            break;
        }
        let end = meta.partitions.len().min(first + remaining);
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(TopicName(str_bytes(name.clone())));
        t.topic_id = meta.record.id;
        t.is_internal = meta.record.internal;
        t.partitions = (first..end)
            .map(|i| partition(state, i as i32, &meta.partitions[i]))
            .collect();
        resp.topics.push(t);
        remaining -= end - first;
        if end < meta.partitions.len() {
            resp.next_cursor = Some(next(&name, end));
            break;
        }
    }
    resp
}

fn next(topic: &str, partition: usize) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = TopicName(str_bytes(topic));
    c.partition_index = i32::try_from(partition).unwrap_or(i32::MAX);
    c
}

fn partition(
    state: &ClusterState,
    index: i32,
    p: &PartitionState,
) -> DescribeTopicPartitionsResponsePartition {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let leader = if p.leader >= 0 && state.is_live(p.leader) {
        p.leader
    } else {
        -1
    };
    let offline: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|b| !state.is_live(*b))
        .collect();
    let mut r = DescribeTopicPartitionsResponsePartition::default();
    r.partition_index = index;
    if leader < 0 {
        r.error_code = ResponseError::LeaderNotAvailable.code();
    }
    r.leader_id = BrokerId(leader);
    r.leader_epoch = p.leader_epoch;
    r.replica_nodes = ids(&p.replicas);
    r.isr_nodes = ids(&p.isr);
    r.eligible_leader_replicas = Some(Vec::new());
    r.last_known_elr = Some(Vec::new());
    r.offline_replicas = ids(&offline);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_topic_partitions_request::{self as rq, TopicRequest};

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(crate::metadata::cluster::Command::RegisterBroker {
            id: 1,
            host: "h".into(),
            port: 9092,
            rack: None,
            internal: String::new(),
            listeners: Default::default(),
            now_ms: 0,
        })
        .unwrap();
        for (name, n) in [("a", 3), ("b", 2), ("c", 1)] {
            let record = crate::metadata::TopicRecord {
                name: name.into(),
                id: uuid::Uuid::new_v4(),
                partitions: n,
                replication_factor: 1,
                configs: Default::default(),
                internal: false,
            };
            s.apply(crate::metadata::cluster::Command::CreateTopic {
                record,
                assignment: vec![vec![1]; n as usize],
            })
            .unwrap();
        }
        s
    }

    fn ask(
        limit: i32,
        cursor: Option<(&str, i32)>,
        topics: &[&str],
    ) -> DescribeTopicPartitionsResponse {
        let mut req = DescribeTopicPartitionsRequest::default();
        req.response_partition_limit = limit;
        req.topics = topics
            .iter()
            .map(|t| {
                let mut r = TopicRequest::default();
                r.name = TopicName(str_bytes(*t));
                r
            })
            .collect();
        req.cursor = cursor.map(|(t, p)| {
            let mut c = rq::Cursor::default();
            c.topic_name = TopicName(str_bytes(t));
            c.partition_index = p;
            c
        });
        page(&state(), req)
    }

    /// Topics with their partition indexes, and the next cursor.
    type Shape = (Vec<(String, Vec<i32>)>, Option<(String, i32)>);

    fn shape(r: &DescribeTopicPartitionsResponse) -> Shape {
        (
            r.topics
                .iter()
                .map(|t| {
                    let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    (
                        name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect(),
            r.next_cursor
                .as_ref()
                .map(|c| (c.topic_name.0.to_string(), c.partition_index)),
        )
    }

    #[test]
    fn pages_follow_the_cursor_through_every_partition() {
        let s = |v: &[(&str, &[i32])]| -> Vec<(String, Vec<i32>)> {
            v.iter().map(|(n, p)| (n.to_string(), p.to_vec())).collect()
        };
        assert_eq!(
            shape(&ask(2, None, &[])),
            (s(&[("a", &[0, 1])]), Some(("a".into(), 2)))
        );
        assert_eq!(
            shape(&ask(2, Some(("a", 2)), &[])),
            (s(&[("a", &[2]), ("b", &[0])]), Some(("b".into(), 1)))
        );
        assert_eq!(
            shape(&ask(2, Some(("b", 1)), &[])),
            (s(&[("b", &[1]), ("c", &[0])]), None)
        );
        // Exactly at a topic's end: the cursor names the next topic.
        assert_eq!(
            shape(&ask(3, None, &["c", "a"])),
            (s(&[("a", &[0, 1, 2])]), Some(("c".into(), 0)))
        );
        let unknown = ask(0, None, &["zz", "c"]);
        assert_eq!(unknown.topics.len(), 2);
        assert_eq!(
            unknown.topics[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(unknown.topics[0].partitions[0].leader_id, BrokerId(1));
    }
}
