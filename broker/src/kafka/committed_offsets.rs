//! OffsetCommit, OffsetFetch and OffsetDelete: the Kafka APIs over consumers' committed
//! offsets, served from the group coordinator's store (`group::offsets`, the
//! `__consumer_offsets` records and their cache).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::str_bytes;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::{CommittedOffset, OffsetChange};

pub async fn commit(
    broker: &Arc<Broker>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    let now = now_ms();
    let inst = req.group_instance_id.as_ref().map(|s| s.to_string());
    let check = (
        req.member_id.as_str(),
        inst.as_deref(),
        req.generation_id_or_member_epoch,
    );
    let group_error = group_commit_error(broker, &group_id, Some(check));
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| PartitionCommit {
            partition: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: if version >= 6 {
                p.committed_leader_epoch
            } else {
                -1
            },
            metadata: p.committed_metadata.as_ref(),
        });
        (&t.name, partitions.collect())
    });
    let mut checked = CheckedCommits::check(broker, &group_id, group_error, topics, now);
    let changes = std::mem::take(&mut checked.changes);
    if let Err(e) = broker.groups.write_durable(&group_id, changes, now).await {
        checked.failed(e);
    }
    let mut resp = OffsetCommitResponse::default();
    for (t, codes) in req.topics.iter().zip(checked.codes) {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for (p, code) in t.partitions.iter().zip(codes) {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = code;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// Why the group refuses a commit, if it does: no group id, not coordinated here,
/// or (with `member`: member id, group instance id, generation) a member the group
/// does not know in that generation. KIP-447 applies the last to TxnOffsetCommit.
pub(super) fn group_commit_error(
    broker: &Broker,
    group_id: &str,
    member: Option<(&str, Option<&str>, i32)>,
) -> Option<ResponseError> {
    if group_id.is_empty() {
        return Some(ResponseError::InvalidGroupId);
    }
    if !broker.coordinates(group_id) {
        return Some(ResponseError::NotCoordinator);
    }
    let (member_id, instance_id, generation) = member?;
    match broker.groups.group(group_id) {
        Some(g) => g
            .lock()
            .validate_commit(member_id, instance_id, generation)
            .err(),
        None if generation >= 0 => Some(ResponseError::IllegalGeneration),
        None => None,
    }
}

/// One partition's commit as a request states it (OffsetCommit, TxnOffsetCommit).
pub(super) struct PartitionCommit<'a> {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a kafka_protocol::protocol::StrBytes>,
}

/// A request's commits checked partition by partition.
pub(super) struct CheckedCommits {
    /// Per topic and partition of the request, the error to answer (0: accepted).
    pub codes: Vec<Vec<i16>>,
    /// The accepted commits, to write.
    pub changes: Vec<OffsetChange>,
    accepted: Vec<(usize, usize)>,
}

impl CheckedCommits {
    /// Refuses every commit with the group's own error, and one of an unknown
    /// partition or with metadata over `max_metadata_bytes`; keeps the others.
    pub(super) fn check<'a>(
        broker: &Broker,
        group_id: &str,
        group_error: Option<ResponseError>,
        topics: impl Iterator<Item = (&'a TopicName, Vec<PartitionCommit<'a>>)>,
        now: i64,
    ) -> Self {
        let max_metadata = broker.groups.config.max_metadata_bytes;
        let mut out = CheckedCommits {
            codes: Vec::new(),
            changes: Vec::new(),
            accepted: Vec::new(),
        };
        for (ti, (name, partitions)) in topics.enumerate() {
            let topic = broker.replicas.topic(&name.0);
            let mut codes = Vec::with_capacity(partitions.len());
            for (pi, c) in partitions.into_iter().enumerate() {
                let known = topic
                    .as_ref()
                    .is_some_and(|tp| (0..tp.record.partitions).contains(&c.partition));
                let refused = group_error.or(if !known {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if c.metadata.map_or(0, |m| m.len()) > max_metadata {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    None
                });
                match refused {
                    Some(e) => codes.push(e.code()),
                    None => {
                        codes.push(0);
                        out.accepted.push((ti, pi));
                        out.changes.push((
                            group_id.to_string(),
                            name.0.to_string(),
                            c.partition,
                            Some(CommittedOffset {
                                offset: c.offset,
                                leader_epoch: c.leader_epoch,
                                metadata: c.metadata.map(|m| m.to_string()),
                                commit_timestamp: now,
                            }),
                        ));
                    }
                }
            }
            out.codes.push(codes);
        }
        out
    }

    /// Writing the accepted commits failed: each of them answers `e`.
    pub(super) fn failed(&mut self, e: ResponseError) {
        for (ti, pi) in &self.accepted {
            self.codes[*ti][*pi] = e.code();
        }
    }
}

/// Committed rows of one topic: (partition, offset, leader epoch, metadata).
type TopicRows = (TopicName, Vec<(i32, i64, i32, String)>);

fn fetch_group(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<TopicRows> {
    let committed = broker.groups.group_offsets(group);
    match wanted {
        Some(list) => list
            .into_iter()
            .map(|(name, parts)| {
                let rows = parts
                    .into_iter()
                    .map(|p| match committed.get(&(name.0.to_string(), p)) {
                        Some(c) => (
                            p,
                            c.offset,
                            c.leader_epoch,
                            c.metadata.clone().unwrap_or_default(),
                        ),
                        None => (p, -1, -1, String::new()),
                    })
                    .collect();
                (name, rows)
            })
            .collect(),
        None => {
            let mut out: Vec<TopicRows> = Vec::new();
            for ((t, p), c) in committed {
                let row = (
                    p,
                    c.offset,
                    c.leader_epoch,
                    c.metadata.clone().unwrap_or_default(),
                );
                match out.last_mut() {
                    Some((name, rows)) if name.0.as_str() == t => rows.push(row),
                    _ => out.push((TopicName(str_bytes(t)), vec![row])),
                }
            }
            out
        }
    }
}

pub async fn fetch(
    broker: &Arc<Broker>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    // A consumer that asks for stable offsets is told to retry while a transaction
    // holds a commit for the partition that its marker has not decided yet.
    let unstable = |group: &str, topic: &TopicName, partition: i32| {
        version >= 7
            && req.require_stable
            && broker
                .groups
                .has_unstable_offset(group, &topic.0, partition)
    };
    if version >= 8 {
        for g in req.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = g.group_id.clone();
            if !broker.coordinates(&g.group_id.0) {
                out.error_code = ResponseError::NotCoordinator.code();
                resp.groups.push(out);
                continue;
            }
            out.topics = fetch_group(broker, &g.group_id.0, wanted)
                .into_iter()
                .map(|(name, rows)| {
                    let mut t = OffsetFetchResponseTopics::default();
                    t.partitions = rows
                        .into_iter()
                        .map(|(p, o, e, m)| {
                            let mut r = OffsetFetchResponsePartitions::default();
                            r.partition_index = p;
                            r.committed_offset = o;
                            r.committed_leader_epoch = e;
                            r.metadata = Some(str_bytes(m));
                            if unstable(&g.group_id.0, &name, p) {
                                r.error_code = ResponseError::UnstableOffsetCommit.code();
                                r.committed_offset = -1;
                            }
                            r
                        })
                        .collect();
                    t.name = name;
                    t
                })
                .collect();
            resp.groups.push(out);
        }
        return resp;
    }
    if !broker.coordinates(&req.group_id.0) {
        resp.error_code = ResponseError::NotCoordinator.code();
        return resp;
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    resp.topics = fetch_group(broker, &req.group_id.0, wanted)
        .into_iter()
        .map(|(name, rows)| {
            let mut t = OffsetFetchResponseTopic::default();
            t.partitions = rows
                .into_iter()
                .map(|(p, o, e, m)| {
                    let mut r = OffsetFetchResponsePartition::default();
                    r.partition_index = p;
                    r.committed_offset = o;
                    if version >= 5 {
                        r.committed_leader_epoch = e;
                    }
                    r.metadata = Some(str_bytes(m));
                    if unstable(&req.group_id.0, &name, p) {
                        r.error_code = ResponseError::UnstableOffsetCommit.code();
                        r.committed_offset = -1;
                    }
                    r
                })
                .collect();
            t.name = name;
            t
        })
        .collect();
    resp
}

pub async fn delete(
    broker: &Arc<Broker>,
    req: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let mut resp = OffsetDeleteResponse::default();
    let group_id = req.group_id.0.to_string();
    if !broker.coordinates(&group_id) {
        resp.error_code = ResponseError::NotCoordinator.code();
        return resp;
    }
    let group = broker.groups.group(&group_id);
    let committed = broker.groups.group_offsets(&group_id);
    if group.is_none() && committed.is_empty() {
        resp.error_code = ResponseError::GroupIdNotFound.code();
        return resp;
    }
    let subscribed: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| {
            group
                .as_ref()
                .is_some_and(|g| g.lock().subscribed_to(&t.name.0))
        })
        .map(|t| t.name.0.to_string())
        .collect();
    let mut changes: Vec<OffsetChange> = Vec::new();
    for t in req.topics {
        let mut tr = OffsetDeleteResponseTopic::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            if subscribed.contains(t.name.0.as_str()) {
                pr.error_code = ResponseError::GroupSubscribedToTopic.code();
            } else if !broker
                .replicas
                .topic(&t.name.0)
                .is_some_and(|tp| (0..tp.record.partitions).contains(&p.partition_index))
            {
                pr.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else if committed.contains_key(&(t.name.0.to_string(), p.partition_index)) {
                changes.push((
                    group_id.clone(),
                    t.name.0.to_string(),
                    p.partition_index,
                    None,
                ));
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    if let Err(e) = broker
        .groups
        .write_durable(&group_id, changes, now_ms())
        .await
    {
        resp.error_code = e.code();
    }
    resp
}
