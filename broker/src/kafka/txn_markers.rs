//! Transaction markers: the WriteTxnMarkers API (a partition leader appends the
//! COMMIT or ABORT control batch of a producer and answers once the in-sync
//! replicas have it), and the marker writer, which takes the transactions the
//! coordinator decided and writes their markers to every partition: directly when
//! this broker leads it, with WriteTxnMarkers to the leader otherwise, retrying
//! until every leader wrote its marker (or the coordinator moved, and the new one
//! resumes), then tells the coordinator to complete the transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::str_bytes;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::log::batch::{self, ControlRecord, Marker};
use crate::log::ValidatedRecords;
use crate::txn::Completion;

/// How long a marker may wait for the in-sync replicas of its partition.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one WriteTxnMarkers exchange with another broker.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// A marker refused because the partition saw a newer producer epoch or a newer
/// coordinator: writing it again can never succeed, and what superseded it decides
/// the partition's transaction (as Kafka's coordinator treats these answers).
fn superseded(code: i16) -> bool {
    code == ResponseError::InvalidProducerEpoch.code()
        || code == ResponseError::TransactionCoordinatorFenced.code()
}

/// One marker for one partition.
#[derive(Debug, Clone)]
pub struct MarkerWrite {
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
}

/// Appends a marker to a partition this broker leads and waits until its in-sync
/// replicas (at least `min.insync.replicas`) have it.
pub async fn write_local(broker: &Arc<Broker>, m: &MarkerWrite) -> Result<(), ResponseError> {
    let state = broker
        .replicas
        .topic(&m.topic)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let p = Arc::clone(state.leader_of(m.partition)?);
    let min_isr = crate::metadata::cluster::min_insync_replicas(&state.record);
    p.check_leader(min_isr)?;
    let raw = batch::control_batch(
        m.producer_id,
        m.producer_epoch,
        ControlRecord {
            marker: if m.commit {
                Marker::Commit
            } else {
                Marker::Abort
            },
            coordinator_epoch: m.coordinator_epoch,
        },
        now_ms(),
    );
    let records =
        ValidatedRecords::new(&raw, usize::MAX).map_err(|_| ResponseError::CorruptMessage)?;
    let append = {
        let p = Arc::clone(&p);
        crate::blocking::run(move || p.append(records, now_ms()))
    };
    let info = append
        .await
        .ok_or(ResponseError::NotLeaderOrFollower)?
        .map_err(|e| match e {
            crate::log::LogError::Sequence(crate::producer::SequenceError::InvalidEpoch {
                ..
            }) => ResponseError::InvalidProducerEpoch,
            crate::log::LogError::Sequence(crate::producer::SequenceError::CoordinatorFenced {
                ..
            }) => ResponseError::TransactionCoordinatorFenced,
            e => super::log_error_code(&e),
        })?;
    p.wait_for_replication(
        info.last_offset + 1,
        info.leader_epoch,
        min_isr,
        REPLICATION_TIMEOUT,
    )
    .await?;
    if m.topic == OFFSETS_TOPIC {
        broker
            .groups
            .complete_txn(m.partition, m.producer_id, m.commit, info.last_offset + 1);
    }
    Ok(())
}

/// The WriteTxnMarkers API (from transaction coordinators).
pub async fn handle(
    broker: &Arc<Broker>,
    req: WriteTxnMarkersRequest,
    _version: i16,
) -> WriteTxnMarkersResponse {
    let mut resp = WriteTxnMarkersResponse::default();
    for marker in req.markers {
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = marker.producer_id;
        for t in marker.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name.clone();
            for index in t.partition_indexes {
                let m = MarkerWrite {
                    topic: t.name.0.to_string(),
                    partition: index,
                    producer_id: marker.producer_id.0,
                    producer_epoch: marker.producer_epoch,
                    coordinator_epoch: marker.coordinator_epoch,
                    commit: marker.transaction_result,
                };
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = index;
                pr.error_code = match write_local(broker, &m).await {
                    Ok(()) => 0,
                    Err(e) => e.code(),
                };
                tr.partitions.push(pr);
            }
            mr.topics.push(tr);
        }
        resp.markers.push(mr);
    }
    resp
}

/// Runs the marker writer: every completion the coordinator hands over is written
/// by a task of its own.
pub async fn run_writer(broker: Arc<Broker>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    while let Some(c) = rx.recv().await {
        let b = Arc::clone(&broker);
        tokio::spawn(async move { complete(&b, c).await });
    }
}

/// Writes every marker of `c`, retrying the partitions that failed with a growing
/// pause, then completes the transaction at the coordinator.
async fn complete(broker: &Arc<Broker>, c: Completion) {
    let mut remaining = c.partitions.clone();
    let mut pause = Duration::from_millis(50);
    loop {
        if !broker.txns.still_coordinating(&c) {
            info!(transactional_id = %c.transactional_id,
                "coordinator moved; its successor finishes the transaction");
            return;
        }
        if !remaining.is_empty() {
            remaining = write_all(broker, &c, remaining).await;
        }
        if remaining.is_empty() {
            match broker.txns.finish(&c, now_ms()).await {
                Ok(()) => return,
                Err(ResponseError::NotCoordinator) => return,
                Err(e) => {
                    warn!(transactional_id = %c.transactional_id, error = ?e, "cannot complete transaction; retrying")
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One round: the partitions still without their marker afterwards. A partition
/// whose topic is gone needs no marker.
async fn write_all(
    broker: &Arc<Broker>,
    c: &Completion,
    partitions: Vec<(String, i32)>,
) -> Vec<(String, i32)> {
    let cluster = broker.cluster();
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut failed = Vec::new();
    for (topic, index) in partitions {
        let Some(t) = cluster.topics.get(&topic) else {
            debug!(%topic, "topic of a transaction is gone; no marker needed");
            continue;
        };
        match usize::try_from(index)
            .ok()
            .and_then(|i| t.partitions.get(i))
        {
            Some(p) if p.leader >= 0 => by_leader.entry(p.leader).or_default().push((topic, index)),
            Some(_) => failed.push((topic, index)),
            None => continue,
        }
    }
    let me = broker.node_id();
    for (leader, parts) in by_leader {
        if leader == me {
            for (topic, partition) in parts {
                let m = MarkerWrite {
                    topic: topic.clone(),
                    partition,
                    producer_id: c.producer_id,
                    producer_epoch: c.producer_epoch,
                    coordinator_epoch: c.coordinator_epoch,
                    commit: c.commit,
                };
                match write_local(broker, &m).await {
                    Ok(()) => {}
                    Err(e) if superseded(e.code()) => {
                        warn!(%topic, partition, error = ?e, "marker superseded by a newer producer or coordinator epoch");
                    }
                    Err(e) => {
                        debug!(%topic, partition, error = ?e, "marker not written; retrying");
                        failed.push((topic, partition));
                    }
                }
            }
            continue;
        }
        let Some(b) = cluster.brokers.get(&leader) else {
            failed.extend(parts);
            continue;
        };
        match send_markers(&b.host, b.port, c, &parts).await {
            Ok(errors) => failed.extend(errors),
            Err(e) => {
                debug!(leader, error = %e, "cannot send markers; retrying");
                failed.extend(parts);
            }
        }
    }
    failed
}

/// Sends WriteTxnMarkers (v1) to the broker at `host:port`; returns the partitions
/// that failed.
async fn send_markers(
    host: &str,
    port: i32,
    c: &Completion,
    parts: &[(String, i32)],
) -> anyhow::Result<Vec<(String, i32)>> {
    let mut topics: HashMap<&str, Vec<i32>> = HashMap::new();
    for (t, p) in parts {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let mut marker = WritableTxnMarker::default();
    marker.producer_id = ProducerId(c.producer_id);
    marker.producer_epoch = c.producer_epoch;
    marker.transaction_result = c.commit;
    marker.coordinator_epoch = c.coordinator_epoch;
    marker.topics = topics
        .into_iter()
        .map(|(t, ps)| {
            let mut wt = WritableTxnMarkerTopic::default();
            wt.name = TopicName(str_bytes(t.to_string()));
            wt.partition_indexes = ps;
            wt
        })
        .collect();
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![marker];
    let resp: WriteTxnMarkersResponse =
        super::peer::call(host, port, ApiKey::WriteTxnMarkers, 1, &req, RPC_TIMEOUT).await?;
    let mut failed = Vec::new();
    let mut answered = 0usize;
    for m in resp.markers {
        for t in m.topics {
            for p in t.partitions {
                answered += 1;
                if p.error_code != 0 && !superseded(p.error_code) {
                    debug!(topic = %t.name.0, partition = p.partition_index,
                        code = p.error_code, "marker refused; retrying");
                    failed.push((t.name.0.to_string(), p.partition_index));
                }
            }
        }
    }
    anyhow::ensure!(
        answered == parts.len(),
        "WriteTxnMarkers answered {answered} of {} partitions",
        parts.len()
    );
    Ok(failed)
}
