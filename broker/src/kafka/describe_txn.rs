//! What admin tools ask about transactions (Kafka's `kafka-transactions`):
//! DescribeTransactions and ListTransactions from the coordinator's state,
//! DescribeProducers from a partition leader's producer state (how a hanging
//! transaction is found: an open transaction on a partition that no coordinator
//! will ever end).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::*;

use super::str_bytes;
use crate::broker::Broker;
use crate::clock::now_ms;

pub async fn describe_transactions(
    broker: &Arc<Broker>,
    req: DescribeTransactionsRequest,
    _version: i16,
) -> DescribeTransactionsResponse {
    let mut resp = DescribeTransactionsResponse::default();
    for id in req.transactional_ids {
        let mut ts = TransactionState::default();
        ts.transactional_id = id.clone();
        ts.producer_id = ProducerId(-1);
        ts.producer_epoch = -1;
        ts.transaction_start_time_ms = -1;
        let described = if broker.coordinates_txn(&id.0) {
            broker.txns.describe(&id.0).await
        } else {
            Err(ResponseError::NotCoordinator)
        };
        match described {
            Ok(Some(m)) => {
                ts.transaction_state = str_bytes(m.state.kafka_name());
                ts.transaction_timeout_ms = m.timeout_ms;
                ts.transaction_start_time_ms = m.txn_start_ms;
                ts.producer_id = ProducerId(m.producer_id);
                ts.producer_epoch = m.producer_epoch;
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
                ts.topics = by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut d = TopicData::default();
                        d.topic = TopicName(str_bytes(t));
                        d.partitions = ps;
                        d
                    })
                    .collect();
            }
            Ok(None) => ts.error_code = ResponseError::TransactionalIdNotFound.code(),
            Err(e) => ts.error_code = e.code(),
        }
        resp.transaction_states.push(ts);
    }
    resp
}

/// The state names ListTransactions filters on.
const STATES: [&str; 6] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

pub async fn list_transactions(
    broker: &Arc<Broker>,
    req: ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    let mut resp = ListTransactionsResponse::default();
    resp.unknown_state_filters = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let min_duration = if version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    for (id, m) in broker.txns.list().await {
        let state = m.state.kafka_name();
        if !req.state_filters.is_empty() && !req.state_filters.iter().any(|s| s.as_str() == state) {
            continue;
        }
        if !req.producer_id_filters.is_empty()
            && !req.producer_id_filters.contains(&ProducerId(m.producer_id))
        {
            continue;
        }
        if min_duration >= 0 && (m.txn_start_ms < 0 || now - m.txn_start_ms < min_duration) {
            continue;
        }
        let mut ls = ListedState::default();
        ls.transactional_id = TransactionalId(str_bytes(id));
        ls.producer_id = ProducerId(m.producer_id);
        ls.transaction_state = str_bytes(state);
        resp.transaction_states.push(ls);
    }
    resp
}

pub async fn describe_producers(
    broker: &Arc<Broker>,
    req: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let mut resp = DescribeProducersResponse::default();
    for t in req.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        let state = broker.replicas.topic(&t.name.0);
        for index in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = index;
            let leader = match &state {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(s) => s.leader_of(index),
            };
            match leader {
                Err(e) => pr.error_code = e.code(),
                Ok(p) => {
                    pr.active_producers = p.with_producers(|table| {
                        table
                            .entries()
                            .map(|(id, e)| {
                                let mut ps = ProducerState::default();
                                ps.producer_id = ProducerId(id);
                                ps.producer_epoch = i32::from(e.epoch);
                                ps.last_sequence = e.batches.back().map_or(-1, |b| b.last_seq);
                                ps.last_timestamp = e.last_timestamp;
                                ps.coordinator_epoch = e.coordinator_epoch;
                                ps.current_txn_start_offset = e.txn_first_offset.unwrap_or(-1);
                                ps
                            })
                            .collect()
                    });
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
