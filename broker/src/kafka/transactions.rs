//! The transactional producer's APIs: InitProducerId with a `transactional.id`,
//! AddPartitionsToTxn, AddOffsetsToTxn and EndTxn (served by the transaction
//! coordinator, `txn`), and TxnOffsetCommit (served by the group coordinator, which
//! holds the commits until the transaction's marker decides them).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use tracing::warn;

use super::committed_offsets::{group_commit_error, CheckedCommits, PartitionCommit};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::{self, OFFSETS_TOPIC};

/// InitProducerId for a transactional producer: `(producer id, epoch)`.
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), ResponseError> {
    if !broker.coordinates_txn(transactional_id) {
        return Err(ResponseError::NotCoordinator);
    }
    broker
        .txns
        .init_producer_id(transactional_id, timeout_ms, expected, now_ms(), || async {
            match broker
                .producer_ids
                .next(&broker.quorum, broker.config.node_id)
                .await
            {
                Ok(id) => Some(id),
                Err(e) => {
                    warn!(error = %e, "cannot allocate a producer id");
                    None
                }
            }
        })
        .await
}

/// AddPartitionsToTxn: v0-3 from producers (one transaction); v4 between brokers
/// (a batch of transactions), where `verify_only` asks whether partitions are
/// already part of the transaction (a partition leader verifying a producer's first
/// transactional write, KIP-890 part 1) without adding them.
pub async fn add_partitions(
    broker: &Arc<Broker>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let mut resp = AddPartitionsToTxnResponse::default();
    if version <= 3 {
        resp.results_by_topic_v3_and_below = add_one(
            broker,
            &req.v3_and_below_transactional_id.0,
            (
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
            ),
            &req.v3_and_below_topics,
            false,
        )
        .await;
        return resp;
    }
    for t in &req.transactions {
        let mut r = AddPartitionsToTxnResult::default();
        r.transactional_id = t.transactional_id.clone();
        r.topic_results = add_one(
            broker,
            &t.transactional_id.0,
            (t.producer_id.0, t.producer_epoch),
            &t.topics,
            t.verify_only,
        )
        .await;
        resp.results_by_transaction.push(r);
    }
    resp
}

async fn add_one(
    broker: &Arc<Broker>,
    txn_id: &str,
    (producer_id, epoch): (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    // Unknown partitions fail the request; the others are then not attempted.
    let mut unknown = Vec::new();
    let mut wanted = Vec::new();
    for t in topics {
        let state = broker.replicas.topic(&t.name.0);
        for p in &t.partitions {
            let exists = state
                .as_ref()
                .is_some_and(|s| (0..s.record.partitions).contains(p));
            if exists {
                wanted.push((t.name.0.to_string(), *p));
            } else {
                unknown.push((t.name.0.to_string(), *p));
            }
        }
    }
    let mut not_added = Vec::new();
    let outcome = if !unknown.is_empty() {
        Err(ResponseError::UnknownTopicOrPartition)
    } else if !broker.coordinates_txn(txn_id) {
        Err(ResponseError::NotCoordinator)
    } else if verify_only {
        let mut outcome = Ok(());
        for p in &wanted {
            match broker
                .txns
                .verify_partition(txn_id, producer_id, epoch, p)
                .await
            {
                Ok(true) => {}
                Ok(false) => not_added.push(p.clone()),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        outcome
    } else {
        broker
            .txns
            .add_partitions(txn_id, producer_id, epoch, &wanted, now_ms())
            .await
    };
    let code_of = |name: &str, p: i32| -> i16 {
        let is = |list: &[(String, i32)]| list.iter().any(|(t, i)| t == name && *i == p);
        match &outcome {
            Ok(()) if is(&not_added) => ResponseError::InvalidTxnState.code(),
            Ok(()) => 0,
            Err(ResponseError::UnknownTopicOrPartition) if is(&unknown) => {
                ResponseError::UnknownTopicOrPartition.code()
            }
            Err(ResponseError::UnknownTopicOrPartition) => {
                ResponseError::OperationNotAttempted.code()
            }
            Err(e) => e.code(),
        }
    };
    topics
        .iter()
        .map(|t| {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            for p in &t.partitions {
                let mut pr = AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = *p;
                pr.partition_error_code = code_of(&t.name.0, *p);
                tr.results_by_partition.push(pr);
            }
            tr
        })
        .collect()
}

/// KIP-890 part 1: before a partition leader appends a producer's first
/// transactional batch, it asks the transaction's coordinator whether the partition
/// was added to the transaction (AddPartitionsToTxn v4, `verify_only`), so a late
/// write of a transaction that already ended (a zombie's retry) cannot open a
/// transaction no coordinator will ever close. `Ok` when verified.
pub async fn verify_first_write(
    broker: &Arc<Broker>,
    txn_id: &str,
    producer: (i64, i16),
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    let (coordinator, host, port) =
        super::groups::coordinator_for(broker, crate::txn::TXN_STATE_TOPIC, txn_id, None)
            .map_err(|_| ResponseError::NotEnoughReplicas)?;
    if coordinator == broker.node_id() {
        if !broker.coordinates_txn(txn_id) {
            return Err(ResponseError::NotEnoughReplicas);
        }
        return match broker
            .txns
            .verify_partition(txn_id, producer.0, producer.1, partition)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(ResponseError::InvalidTxnState),
            Err(e @ (ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch)) => {
                Err(e)
            }
            Err(_) => Err(ResponseError::NotEnoughReplicas),
        };
    }
    let mut topic = AddPartitionsToTxnTopic::default();
    topic.name = TopicName(super::str_bytes(partition.0.clone()));
    topic.partitions = vec![partition.1];
    let mut t = AddPartitionsToTxnTransaction::default();
    t.transactional_id = TransactionalId(super::str_bytes(txn_id.to_string()));
    t.producer_id = ProducerId(producer.0);
    t.producer_epoch = producer.1;
    t.verify_only = true;
    t.topics = vec![topic];
    let mut req = AddPartitionsToTxnRequest::default();
    req.transactions = vec![t];
    let resp: AddPartitionsToTxnResponse = super::peer::call(
        &host,
        port,
        ApiKey::AddPartitionsToTxn,
        4,
        &req,
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(|e| {
        tracing::debug!(error = %e, "cannot verify a transactional write with its coordinator");
        ResponseError::NotEnoughReplicas
    })?;
    let code = resp
        .results_by_transaction
        .iter()
        .flat_map(|r| &r.topic_results)
        .flat_map(|t| &t.results_by_partition)
        .map(|p| p.partition_error_code)
        .next()
        .unwrap_or(resp.error_code);
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(
            e @ (ResponseError::InvalidTxnState
            | ResponseError::ProducerFenced
            | ResponseError::InvalidProducerEpoch),
        ) => Err(e),
        Some(_) => Err(ResponseError::NotEnoughReplicas),
    }
}

pub async fn add_offsets(
    broker: &Arc<Broker>,
    req: AddOffsetsToTxnRequest,
    _version: i16,
) -> AddOffsetsToTxnResponse {
    let mut resp = AddOffsetsToTxnResponse::default();
    let txn_id = req.transactional_id.0.to_string();
    let n = broker.groups.config.offsets_partitions;
    let partition = (
        OFFSETS_TOPIC.to_string(),
        offsets::partition_for(&req.group_id.0, n),
    );
    let outcome = if !broker.coordinates_txn(&txn_id) {
        Err(ResponseError::NotCoordinator)
    } else {
        broker
            .txns
            .add_partitions(
                &txn_id,
                req.producer_id.0,
                req.producer_epoch,
                &[partition],
                now_ms(),
            )
            .await
    };
    resp.error_code = outcome.err().map_or(0, |e| e.code());
    resp
}

pub async fn end_txn(broker: &Arc<Broker>, req: EndTxnRequest, _version: i16) -> EndTxnResponse {
    let mut resp = EndTxnResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    let txn_id = req.transactional_id.0.to_string();
    let outcome = if !broker.coordinates_txn(&txn_id) {
        Err(ResponseError::NotCoordinator)
    } else {
        broker
            .txns
            .end_txn(
                &txn_id,
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
                now_ms(),
            )
            .await
    };
    resp.error_code = outcome.err().map_or(0, |e| e.code());
    resp
}

pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    let now = now_ms();
    let inst = req.group_instance_id.as_ref().map(|s| s.to_string());
    // KIP-447: a producer that commits for a consumer of an older generation (a
    // zombie after a rebalance) is refused like that consumer would be.
    let member = (version >= 3 && req.generation_id >= 0).then_some((
        req.member_id.as_str(),
        inst.as_deref(),
        req.generation_id,
    ));
    let group_error = group_commit_error(broker, &group_id, member);
    let topics = req.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| PartitionCommit {
            partition: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: if version >= 2 {
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
    let producer = (req.producer_id.0, req.producer_epoch);
    if let Err(e) = broker
        .groups
        .write_txn_offsets(&group_id, producer, changes, now)
        .await
    {
        checked.failed(e);
    }
    let mut resp = TxnOffsetCommitResponse::default();
    for (t, codes) in req.topics.iter().zip(checked.codes) {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        tr.partitions = t
            .partitions
            .iter()
            .zip(codes)
            .map(|(p, code)| {
                let mut pr = TxnOffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = code;
                pr
            })
            .collect();
        resp.topics.push(tr);
    }
    resp
}
