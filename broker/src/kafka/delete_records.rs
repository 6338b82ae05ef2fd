//! DeleteRecords (`kafka-delete-records`, `Admin.deleteRecords`): moves the log start
//! offset of partitions led here to the requested offset (-1: the high watermark),
//! deleting every record below it. The answer's low watermark is the partition's log
//! start afterwards. Followers follow the new start on their next replica fetch;
//! unlike Kafka the leader does not wait for them before answering (the low
//! watermark it reports is its own, which followers then reach).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::Broker;
use crate::metadata::topic_config;

pub async fn handle(
    broker: &Arc<Broker>,
    req: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            match delete_on_leader(broker, &t.name.0, p.partition_index, p.offset).await {
                Ok(low) => pr.low_watermark = low,
                Err(e) => {
                    pr.low_watermark = -1;
                    pr.error_code = e.code();
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// Deletes the records of `topic`/`partition` below `offset` (-1: the high
/// watermark) on this broker, which must lead the partition; returns the partition's
/// log start afterwards (the low watermark). Also what the admin API calls.
pub async fn delete_on_leader(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    let state = broker
        .replicas
        .topic(topic)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if state.record.internal {
        // As Kafka: internal topics are the coordinators' to trim.
        return Err(ResponseError::InvalidTopicException);
    }
    if !topic_config::compaction::deletes(&state.record.configs) {
        // As Kafka: a `compact`-only topic keeps every key's latest record.
        return Err(ResponseError::PolicyViolation);
    }
    if !broker.holds_lease() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let p = Arc::clone(state.leader_of(partition)?);
    let part = Arc::clone(&p);
    // fsyncs the checkpoint and unlinks segments: off the async worker.
    let local = crate::blocking::run(move || part.delete_records(offset))
        .await
        .unwrap_or(Err(ResponseError::KafkaStorageError))?;
    let tiered = topic_config::remote_storage_enabled(&state.record.configs, &broker.config);
    match &broker.tier {
        Some(tier) if tiered => {
            tier.delete_records(&state.record, &p).await;
            Ok(tier.log_start_offset(&state.record.id, &p, p.log_start_offset()))
        }
        _ => Ok(local),
    }
}
