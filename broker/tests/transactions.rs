//! Transaction protocol details no client library exposes, against a real broker:
//! a leader refuses a producer's first transactional write to a partition the
//! coordinator has not added to its transaction (KIP-890 part 1) — also the late
//! write of a transaction that already ended — AddPartitionsToTxn v4
//! `verify_only` answers without adding, and the next transaction's first
//! AddPartitionsToTxn waits for the previous one's markers instead of answering
//! CONCURRENT_TRANSACTIONS.

mod common;
mod tier_support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Client, TestBroker};
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tier_support::{create_topic, s};

const TXN: &str = "verify-me";

fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Bytes {
    let r = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 1,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [r].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

async fn produce(c: &mut Client, topic: &str, records: Bytes) -> i16 {
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(records);
    let mut td = TopicProduceData::default();
    td.name = TopicName(s(topic));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.transactional_id = Some(TransactionalId(s(TXN)));
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &req).await;
    resp.responses[0].partition_responses[0].error_code
}

fn topic(name: &str) -> AddPartitionsToTxnTopic {
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(s(name));
    t.partitions = vec![0];
    t
}

async fn add(c: &mut Client, pid: i64, epoch: i16, name: &str) -> i16 {
    let mut req = AddPartitionsToTxnRequest::default();
    req.v3_and_below_transactional_id = TransactionalId(s(TXN));
    req.v3_and_below_producer_id = ProducerId(pid);
    req.v3_and_below_producer_epoch = epoch;
    req.v3_and_below_topics = vec![topic(name)];
    let r: AddPartitionsToTxnResponse = c.call(ApiKey::AddPartitionsToTxn, 3, &req).await;
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn verify(c: &mut Client, pid: i64, epoch: i16, names: &[&str]) -> Vec<i16> {
    let mut t = AddPartitionsToTxnTransaction::default();
    t.transactional_id = TransactionalId(s(TXN));
    t.producer_id = ProducerId(pid);
    t.producer_epoch = epoch;
    t.verify_only = true;
    t.topics = names.iter().map(|n| topic(n)).collect();
    let mut req = AddPartitionsToTxnRequest::default();
    req.transactions = vec![t];
    let r: AddPartitionsToTxnResponse = c.call(ApiKey::AddPartitionsToTxn, 4, &req).await;
    r.results_by_transaction[0]
        .topic_results
        .iter()
        .map(|t| t.results_by_partition[0].partition_error_code)
        .collect()
}

async fn commit(c: &mut Client, pid: i64, epoch: i16) -> i16 {
    let mut end = EndTxnRequest::default();
    end.transactional_id = TransactionalId(s(TXN));
    end.producer_id = ProducerId(pid);
    end.producer_epoch = epoch;
    end.committed = true;
    let r: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &end).await;
    r.error_code
}

/// InitProducerId for the transactional id, once its coordinator is up.
async fn init(c: &mut Client) -> (i64, i16) {
    for _ in 0..100 {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = Some(TransactionalId(s(TXN)));
        req.transaction_timeout_ms = 60_000;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req).await;
        if r.error_code == 0 {
            return (r.producer_id.0, r.producer_epoch);
        }
        // The first lookup creates __transaction_state; its partitions take a moment.
        let mut find = FindCoordinatorRequest::default();
        find.key_type = 1;
        find.coordinator_keys = vec![s(TXN)];
        let _: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &find).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no transaction coordinator");
}

#[tokio::test]
async fn a_leader_refuses_transactional_writes_to_partitions_not_in_the_transaction() {
    let broker = TestBroker::start().await;
    let mut c = Client::connect(broker.addr).await;
    create_topic(&mut c, "in-txn", &[]).await;
    create_topic(&mut c, "not-in-txn", &[]).await;
    let (pid, epoch) = init(&mut c).await;

    // Not added: refused, and nothing opens a transaction on the partition.
    assert_eq!(
        produce(&mut c, "in-txn", txn_batch(pid, epoch, 0)).await,
        ResponseError::InvalidTxnState.code()
    );
    assert_eq!(add(&mut c, pid, epoch, "in-txn").await, 0);
    assert_eq!(produce(&mut c, "in-txn", txn_batch(pid, epoch, 0)).await, 0);
    // Later writes of the open transaction need no verification.
    assert_eq!(produce(&mut c, "in-txn", txn_batch(pid, epoch, 1)).await, 0);

    // verify_only answers per partition and adds nothing.
    let codes = verify(&mut c, pid, epoch, &["in-txn", "not-in-txn"]).await;
    assert_eq!(codes, vec![0, ResponseError::InvalidTxnState.code()]);
    assert_eq!(
        produce(&mut c, "not-in-txn", txn_batch(pid, epoch, 0)).await,
        ResponseError::InvalidTxnState.code()
    );
    // A stale epoch is fenced at the coordinator.
    assert_eq!(
        verify(&mut c, pid, epoch - 1, &["in-txn"]).await,
        vec![ResponseError::ProducerFenced.code()]
    );

    assert_eq!(commit(&mut c, pid, epoch).await, 0);
    // A late write of the ended transaction (a retry that lost a race with the
    // commit) is refused once the marker closed the partition's transaction.
    let mut refused = false;
    for _ in 0..50 {
        let code = produce(&mut c, "in-txn", txn_batch(pid, epoch, 2)).await;
        if code == ResponseError::InvalidTxnState.code() {
            refused = true;
            break;
        }
        // Until the marker is written the transaction is still open here.
        assert_eq!(code, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a write after the commit opened a new transaction");
}

#[tokio::test]
async fn back_to_back_transactions_are_never_told_to_retry() {
    let broker = TestBroker::start().await;
    let mut c = Client::connect(broker.addr).await;
    create_topic(&mut c, "back-to-back", &[]).await;
    let (pid, epoch) = init(&mut c).await;
    for seq in 0..30 {
        // Sent right after the previous EndTxn, while its markers are being written:
        // it waits for them (a clients' CONCURRENT_TRANSACTIONS retry costs 20 ms+).
        assert_eq!(
            add(&mut c, pid, epoch, "back-to-back").await,
            0,
            "transaction {seq}"
        );
        assert_eq!(
            produce(&mut c, "back-to-back", txn_batch(pid, epoch, seq)).await,
            0
        );
        assert_eq!(commit(&mut c, pid, epoch).await, 0, "transaction {seq}");
    }
}
