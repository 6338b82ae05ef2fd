//! `strata txn ...`: transactions, as their coordinators see them.

use clap::Subcommand;
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::*;
use strata_broker::security::admin::AdminChannel;

use crate::out::{json, table, Output};
use crate::status;

#[derive(Subcommand)]
pub enum TxnCmd {
    /// Every transactional id of the cluster with its producer and state.
    List {
        /// Only ids in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    Describe {
        transactional_id: String,
    },
    /// Abort the id's open transaction as its timeout would: the producer is fenced
    /// and the abort markers are written. (A hanging transaction that no
    /// coordinator knows is aborted with Kafka's `kafka-transactions abort`.)
    Abort {
        transactional_id: String,
    },
}

pub async fn run(
    c: &mut AdminClient<AdminChannel>,
    cmd: TxnCmd,
    out: Output,
) -> Result<(), String> {
    let d = match cmd {
        TxnCmd::List { states } => {
            let r = c
                .list_transactions(ListTransactionsRequest {
                    local_only: false,
                    states,
                })
                .await
                .map_err(status)?
                .into_inner();
            if !r.unavailable_brokers.is_empty() {
                eprintln!(
                    "warning: brokers {:?} did not answer; their transactions are not listed",
                    r.unavailable_brokers
                );
            }
            if out == Output::Json {
                return json(&r);
            }
            table(
                &["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE", "COORDINATOR"],
                r.transactions
                    .iter()
                    .map(|t| {
                        vec![
                            t.transactional_id.clone(),
                            t.producer_id.to_string(),
                            t.state.clone(),
                            t.coordinator.to_string(),
                        ]
                    })
                    .collect(),
            );
            return Ok(());
        }
        TxnCmd::Describe { transactional_id } => c
            .describe_transaction(DescribeTransactionRequest { transactional_id })
            .await
            .map_err(status)?
            .into_inner(),
        TxnCmd::Abort { transactional_id } => c
            .abort_transaction(AbortTransactionRequest { transactional_id })
            .await
            .map_err(status)?
            .into_inner(),
    };
    if out == Output::Json {
        return json(&d);
    }
    let started = if d.start_time_ms >= 0 {
        format!(", open since {} ms", d.start_time_ms)
    } else {
        String::new()
    };
    println!(
        "transaction {}: {} (producer {} epoch {}, timeout {} ms{started}), coordinator {}",
        d.transactional_id, d.state, d.producer_id, d.producer_epoch, d.timeout_ms, d.coordinator
    );
    table(
        &["TOPIC", "PARTITION"],
        d.partitions
            .iter()
            .map(|p| vec![p.topic.clone(), p.partition.to_string()])
            .collect(),
    );
    Ok(())
}
