//! Produce: validate each partition's batches (CRC, size), append them, answer with
//! the assigned base offset. acks=0 gets no response; acks=all waits for the ISR
//! (on a single node the leader alone), and `min.insync.replicas` is enforced.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{log_error_code, s};
use crate::broker::{now_ms, Broker};
use crate::log::ValidatedRecords;
use crate::telemetry::Metrics;

pub async fn handle(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let mut resp = ProduceResponse::default();
    for topic in req.topic_data {
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name.clone();
        let state = broker.topic(&topic.name.0);
        for pd in topic.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            let result = (|| {
                if !matches!(acks, -1..=1) {
                    return Err((
                        ResponseError::InvalidRequiredAcks,
                        format!("acks={acks} is not -1, 0 or 1"),
                    ));
                }
                if req.transactional_id.is_some() {
                    return Err((
                        ResponseError::TransactionalIdAuthorizationFailed,
                        "transactions are not supported yet".to_string(),
                    ));
                }
                let Some(state) = &state else {
                    return Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown topic `{}`", topic.name.0),
                    ));
                };
                let Some(partition) = state.partition(pd.index) else {
                    return Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown partition {}", pd.index),
                    ));
                };
                if acks == -1 {
                    let min_isr = state
                        .record
                        .configs
                        .get("min.insync.replicas")
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(1);
                    if min_isr > 1 {
                        return Err((
                            ResponseError::NotEnoughReplicas,
                            format!("min.insync.replicas={min_isr} but the ISR has 1 replica"),
                        ));
                    }
                }
                let Some(records) = pd.records.as_ref() else {
                    return Err((ResponseError::CorruptMessage, "no records".to_string()));
                };
                let max = partition.log_config().max_message_bytes;
                let validated = ValidatedRecords::new(records, max)
                    .map_err(|e| (log_error_code(&e), e.to_string()))?;
                let (bytes, count) = (validated.byte_len() as u64, validated.record_count());
                let info = partition
                    .append(validated, now_ms())
                    .map_err(|e| (log_error_code(&e), e.to_string()))?;
                let labels = Metrics::topic(&topic.name.0);
                broker.metrics.bytes_in.add(bytes, &labels);
                broker.metrics.records_in.add(count, &labels);
                Ok((info, partition.log_start_offset()))
            })();
            match result {
                Ok((info, start)) => {
                    pr.base_offset = info.base_offset;
                    pr.log_append_time_ms = info.log_append_time;
                    if version >= 5 {
                        pr.log_start_offset = start;
                    }
                }
                Err((code, message)) => {
                    pr.error_code = code.code();
                    if version >= 8 {
                        pr.error_message = Some(s(message.clone()));
                    }
                    broker
                        .metrics
                        .requests_failed
                        .add(1, &[opentelemetry::KeyValue::new("api", "Produce")]);
                    tracing::debug!(topic = %topic.name.0, partition = pd.index, %message, "produce rejected");
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if acks == 0 {
        None
    } else {
        Some(resp)
    }
}
