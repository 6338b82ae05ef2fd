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
    let mut resp = OffsetCommitResponse::default();
    let group_id = req.group_id.0.to_string();
    let now = now_ms();
    let inst = req.group_instance_id.as_ref().map(|s| s.to_string());
    let group_error = if group_id.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else if !broker.coordinates(&group_id) {
        Some(ResponseError::NotCoordinator)
    } else {
        match broker.groups.group(&group_id) {
            Some(g) => g
                .lock()
                .validate_commit(
                    &req.member_id,
                    inst.as_deref(),
                    req.generation_id_or_member_epoch,
                )
                .err(),
            None if req.generation_id_or_member_epoch >= 0 => {
                Some(ResponseError::IllegalGeneration)
            }
            None => None,
        }
    };
    let max_meta = broker.groups.config.max_metadata_bytes;
    let mut changes: Vec<OffsetChange> = Vec::new();
    let mut pending: Vec<(usize, usize)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        let topic = broker.replicas.topic(&t.name.0);
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            let commit = Commit {
                group: &group_id,
                topic: &t.name,
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref(),
            };
            match commit.change(group_error, topic.as_deref(), max_meta, now) {
                Err(e) => pr.error_code = e.code(),
                Ok(change) => {
                    changes.push(change);
                    pending.push((ti, pi));
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    if let Err(e) = broker.groups.write_durable(&group_id, changes, now).await {
        for (ti, pi) in pending {
            resp.topics[ti].partitions[pi].error_code = e.code();
        }
    }
    resp
}

/// One partition's commit as a request states it (OffsetCommit, TxnOffsetCommit).
pub(super) struct Commit<'a> {
    pub group: &'a str,
    pub topic: &'a TopicName,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a kafka_protocol::protocol::StrBytes>,
}

impl Commit<'_> {
    /// The change to store, or why this partition's commit is refused: the group's
    /// own error, an unknown partition, metadata over `max_metadata` bytes.
    pub(super) fn change(
        &self,
        group_error: Option<ResponseError>,
        topic: Option<&crate::replicas::TopicState>,
        max_metadata: usize,
        now: i64,
    ) -> Result<OffsetChange, ResponseError> {
        if let Some(e) = group_error {
            return Err(e);
        }
        if !topic.is_some_and(|tp| (0..tp.record.partitions).contains(&self.partition)) {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        if self.metadata.map_or(0, |m| m.len()) > max_metadata {
            return Err(ResponseError::OffsetMetadataTooLarge);
        }
        Ok((
            self.group.to_string(),
            self.topic.0.to_string(),
            self.partition,
            Some(CommittedOffset {
                offset: self.offset,
                leader_epoch: self.leader_epoch,
                metadata: self.metadata.map(|m| m.to_string()),
                commit_timestamp: now,
            }),
        ))
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
