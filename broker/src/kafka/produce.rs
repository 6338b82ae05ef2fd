//! Produce: validate each partition's batches (CRC, size), append them, answer with
//! the assigned base offset. acks=0 gets no response; acks=all waits until the high
//! watermark passes the batch (every in-sync replica has it), and
//! `min.insync.replicas` is enforced before appending and again when the wait
//! ends (the ISR may have shrunk meanwhile). Appends that stay page-cache writes
//! run on the request's own thread; a request whose append may block (a segment
//! roll, an fsync a flush policy or a new epoch asks for) runs on the blocking pool.
//! A thread hop on every request cost a third of Kafka ProducerPerformance's
//! throughput on a busy 2-core machine (bench/RESULTS.md, 2026-12-01 20:30).
//! Transactional batches (a request with a `transactional.id`) are appended like
//! any other; the log opens the producer's transaction on the partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::{debug_span, Instrument};

use super::{log_error_code, str_bytes};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::log::ValidatedRecords;
use crate::partition::Partition;
use crate::telemetry::Metrics;

/// An acks=all write waiting for replication.
struct Wait {
    /// Where its answer goes: topic and partition index in the response.
    topic: usize,
    partition: usize,
    replica: Arc<Partition>,
    /// The offset the high watermark must reach, in `epoch`.
    offset: i64,
    epoch: i32,
    min_isr: usize,
}

pub async fn handle(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let refused = match &req.transactional_id {
        Some(id) => verify_transactional(broker, &id.0, &req).await,
        None => HashMap::new(),
    };
    let span = debug_span!("produce.append", kafka.acks = acks);
    let (mut resp, waits) = if appends_stay_in_memory(broker, &req) {
        span.in_scope(|| append_all(broker, req, version, &refused))
    } else {
        let b = Arc::clone(broker);
        crate::blocking::run(move || span.in_scope(|| append_all(&b, req, version, &refused)))
            .await?
    };
    if !waits.is_empty() {
        // acks=all: the time the followers take to replicate the batches.
        let span = debug_span!("produce.await_replication", partitions = waits.len());
        wait_for_replication(&mut resp, &waits, timeout, version)
            .instrument(span)
            .await;
    }
    if acks == 0 {
        None
    } else {
        Some(resp)
    }
}

/// Whether every append of the request stays a page-cache write (unknown topics and
/// partitions led elsewhere are answered without I/O).
fn appends_stay_in_memory(broker: &Broker, req: &ProduceRequest) -> bool {
    let now = now_ms();
    req.topic_data.iter().all(|t| {
        let Some(state) = broker.replicas.topic(&t.name.0) else {
            return true;
        };
        t.partition_data.iter().all(|pd| {
            let bytes = pd.records.as_ref().map_or(0, |r| r.len() as u64);
            state
                .leader_of(pd.index)
                .map_or(true, |p| p.append_stays_in_memory(bytes, now))
        })
    })
}

/// The partitions where this request holds a producer's first transactional write
/// that the coordinator did not confirm as part of its transaction (KIP-890 part 1),
/// with the error to answer.
async fn verify_transactional(
    broker: &Arc<Broker>,
    txn_id: &str,
    req: &ProduceRequest,
) -> HashMap<(String, i32), ResponseError> {
    let mut refused = HashMap::new();
    for t in &req.topic_data {
        let Some(state) = broker.replicas.topic(&t.name.0) else {
            continue;
        };
        for pd in &t.partition_data {
            let (Ok(p), Some(records)) = (state.leader_of(pd.index), pd.records.as_ref()) else {
                continue;
            };
            let Ok(first) = crate::log::batch::BatchHeader::parse(records) else {
                continue;
            };
            if !first.is_transactional() || p.with_producers(|s| s.has_open_txn(first.producer_id))
            {
                continue;
            }
            let partition = (t.name.0.to_string(), pd.index);
            let producer = (first.producer_id, first.producer_epoch);
            if let Err(e) =
                super::transactions::verify_first_write(broker, txn_id, producer, &partition).await
            {
                refused.insert(partition, e);
            }
        }
    }
    refused
}

/// Validates and appends every partition's records (blocking file I/O); returns the
/// response so far and the acks=all writes still to wait for. `refused` partitions
/// failed the transaction verification and get its error.
fn append_all(
    broker: &Broker,
    req: ProduceRequest,
    version: i16,
    refused: &HashMap<(String, i32), ResponseError>,
) -> (ProduceResponse, Vec<Wait>) {
    let acks = req.acks;
    let mut resp = ProduceResponse::default();
    let mut waits: Vec<Wait> = Vec::new();
    for topic in req.topic_data {
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name.clone();
        let state = broker.replicas.topic(&topic.name.0);
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
                let Some(state) = &state else {
                    return Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown topic `{}`", topic.name.0),
                    ));
                };
                if let Some(e) = refused.get(&(topic.name.0.to_string(), pd.index)) {
                    return Err((
                        *e,
                        "the transaction coordinator has not added this partition to the \
                         producer's transaction"
                            .to_string(),
                    ));
                }
                let partition = state.leader_of(pd.index).map_err(|e| {
                    (
                        e,
                        format!("partition {} is not led by this broker", pd.index),
                    )
                })?;
                let min_isr = if acks == -1 {
                    crate::metadata::cluster::min_insync_replicas(&state.record)
                } else {
                    0
                };
                partition.check_leader(min_isr).map_err(|e| {
                    (
                        e,
                        format!(
                            "min.insync.replicas={min_isr} but the ISR is {:?}",
                            partition.isr()
                        ),
                    )
                })?;
                let Some(records) = pd.records.as_ref() else {
                    return Err((ResponseError::CorruptMessage, "no records".to_string()));
                };
                let config = partition.log_config();
                let validated = ValidatedRecords::shared(records.clone(), config.max_message_bytes)
                    .map_err(|e| (log_error_code(&e), e.to_string()))?;
                if config.compaction.is_some() {
                    crate::log::cleaner::check_keys(records)
                        .map_err(|m| (ResponseError::InvalidRecord, m))?;
                }
                check_transactional(&validated, req.transactional_id.is_some())?;
                let (bytes, count) = (validated.byte_len() as u64, validated.record_count());
                let info = partition
                    .append(validated, now_ms())
                    .map_err(|e| (log_error_code(&e), e.to_string()))?;
                let labels = Metrics::topic(&topic.name.0);
                broker.metrics.bytes_in.add(bytes, &labels);
                broker.metrics.records_in.add(count, &labels);
                Ok((
                    info,
                    partition.log_start_offset(),
                    Arc::clone(partition),
                    min_isr,
                ))
            })();
            match result {
                Ok((info, start, partition, min_isr)) => {
                    if acks == -1 {
                        waits.push(Wait {
                            topic: resp.responses.len(),
                            partition: tr.partition_responses.len(),
                            replica: partition,
                            offset: info.last_offset + 1,
                            epoch: info.leader_epoch,
                            min_isr,
                        });
                    }
                    pr.base_offset = info.base_offset;
                    pr.log_append_time_ms = info.log_append_time;
                    if version >= 5 {
                        pr.log_start_offset = start;
                    }
                }
                Err((code, message)) => {
                    pr.error_code = code.code();
                    if version >= 8 {
                        pr.error_message = Some(str_bytes(message.clone()));
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
    (resp, waits)
}

/// Control batches are the coordinator's alone; transactional batches come only in
/// requests that name their `transactional.id`, and such requests carry nothing else.
fn check_transactional(
    records: &ValidatedRecords,
    transactional: bool,
) -> Result<(), (ResponseError, String)> {
    for h in records.batches() {
        if h.is_control() {
            return Err((
                ResponseError::InvalidRecord,
                "control batches may not be produced".to_string(),
            ));
        }
        if h.is_transactional() != transactional {
            let why = if transactional {
                "a request with a transactional.id holds a non-transactional batch"
            } else {
                "a transactional batch in a request without a transactional.id"
            };
            return Err((ResponseError::InvalidRecord, why.to_string()));
        }
    }
    Ok(())
}

/// Waits for the acks=all writes and turns the failed ones into errors.
async fn wait_for_replication(
    resp: &mut ProduceResponse,
    waits: &[Wait],
    timeout: Duration,
    version: i16,
) {
    let results = futures::future::join_all(waits.iter().map(|w| {
        w.replica
            .wait_for_replication(w.offset, w.epoch, w.min_isr, timeout)
    }))
    .await;
    for (w, r) in waits.iter().zip(results) {
        if let Err(e) = r {
            let pr = &mut resp.responses[w.topic].partition_responses[w.partition];
            pr.error_code = e.code();
            pr.base_offset = -1;
            if version >= 8 {
                let why = match e {
                    ResponseError::NotEnoughReplicasAfterAppend => format!(
                        "written, but the ISR shrank below min.insync.replicas={} \
                         before it was replicated",
                        w.min_isr
                    ),
                    ResponseError::NotLeaderOrFollower => {
                        "leadership changed before the write was replicated".to_string()
                    }
                    _ => "not replicated to the in-sync replicas in time".to_string(),
                };
                pr.error_message = Some(str_bytes(why));
            }
        }
    }
}
