//! The admin API's transaction calls: listing the transactions of every coordinator,
//! describing one and aborting an open one. A call for an id coordinated elsewhere is
//! forwarded to its coordinator (the leader of its `__transaction_state` partition).

use kafka_protocol::error::ResponseError;
use tonic::{Request, Response, Status};

use super::pb::*;
use super::{AdminService, FORWARD_TIMEOUT};
use crate::clock::now_ms;
use crate::txn::state::TxnMetadata;
use crate::txn::{partition_for, TXN_STATE_TOPIC};

impl AdminService {
    pub(super) async fn list_transactions_impl(
        &self,
        r: ListTransactionsRequest,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        let here = self.broker.node_id();
        let mut transactions: Vec<TransactionListing> = if self.broker.holds_lease() {
            self.broker
                .txns
                .list()
                .await
                .into_iter()
                .filter(|(_, m)| {
                    r.states.is_empty() || r.states.iter().any(|s| s == m.state.kafka_name())
                })
                .map(|(id, m)| TransactionListing {
                    transactional_id: id,
                    producer_id: m.producer_id,
                    state: m.state.kafka_name().to_string(),
                    coordinator: here,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut unavailable_brokers = Vec::new();
        if !r.local_only {
            let ask = ListTransactionsRequest {
                local_only: true,
                states: r.states,
            };
            let (answers, silent) = self
                .ask_live_peers("ListTransactions", |mut c| {
                    let ask = ask.clone();
                    async move { c.list_transactions(ask).await.map(Response::into_inner) }
                })
                .await;
            transactions.extend(answers.into_iter().flat_map(|a| a.transactions));
            unavailable_brokers = silent;
        }
        // An id whose coordinator just moved may be listed twice: the first stays.
        transactions.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        transactions.dedup_by(|a, b| a.transactional_id == b.transactional_id);
        Ok(Response::new(ListTransactionsResponse {
            transactions,
            unavailable_brokers,
        }))
    }

    /// DescribeTransaction, or AbortTransaction when `abort`, here or at the id's
    /// coordinator.
    pub(super) async fn transaction_call(
        &self,
        id: String,
        abort: bool,
    ) -> Result<Response<TransactionDescription>, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("transactional_id is empty"));
        }
        if !self.broker.coordinates_txn(&id) {
            let mut c = self
                .key_leader_client(TXN_STATE_TOPIC, &id, partition_for)
                .ok_or_else(|| {
                    Status::unavailable("the transaction coordinator is not available")
                })?;
            return if abort {
                let mut forward = Request::new(AbortTransactionRequest {
                    transactional_id: id,
                });
                forward.set_timeout(FORWARD_TIMEOUT);
                c.abort_transaction(forward).await
            } else {
                let mut forward = Request::new(DescribeTransactionRequest {
                    transactional_id: id,
                });
                forward.set_timeout(FORWARD_TIMEOUT);
                c.describe_transaction(forward).await
            };
        }
        let answer = if abort {
            self.broker.txns.abort(&id, now_ms()).await.map(Some)
        } else {
            self.broker.txns.describe(&id).await
        };
        match answer {
            Ok(Some(m)) => Ok(Response::new(description(&id, self.broker.node_id(), &m))),
            Ok(None) | Err(ResponseError::TransactionalIdNotFound) => Err(Status::not_found(
                format!("unknown transactional id `{id}`"),
            )),
            Err(ResponseError::InvalidTxnState) => Err(Status::failed_precondition(format!(
                "`{id}` has no open transaction to abort"
            ))),
            Err(e) if e.is_retriable() || e == ResponseError::NotCoordinator => {
                Err(Status::unavailable(format!("`{id}`: {e}")))
            }
            Err(e) => Err(Status::internal(format!("`{id}`: {e}"))),
        }
    }
}

fn description(id: &str, coordinator: i32, m: &TxnMetadata) -> TransactionDescription {
    TransactionDescription {
        transactional_id: id.to_string(),
        coordinator,
        state: m.state.kafka_name().to_string(),
        producer_id: m.producer_id,
        producer_epoch: i32::from(m.producer_epoch),
        timeout_ms: m.timeout_ms,
        start_time_ms: m.txn_start_ms,
        partitions: m
            .partitions
            .iter()
            .map(|(topic, partition)| TransactionPartition {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect(),
    }
}
