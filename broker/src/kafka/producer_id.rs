//! InitProducerId: for idempotent producers a fresh producer id, or an epoch bump
//! for a producer that asks to keep its id (KIP-360); with a `transactional.id`,
//! the transaction coordinator's answer (`kafka::transactions`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    if let Some(txn_id) = &req.transactional_id {
        let expected = (version >= 3 && pid >= 0).then_some((pid, epoch));
        match super::transactions::init_producer_id(
            broker,
            txn_id,
            req.transaction_timeout_ms,
            expected,
        )
        .await
        {
            Ok((id, e)) => {
                resp.producer_id = ProducerId(id);
                resp.producer_epoch = e;
            }
            Err(e) => resp.error_code = e.code(),
        }
        return resp;
    }
    if version >= 3 && pid >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        resp.producer_id = ProducerId(pid);
        resp.producer_epoch = epoch + 1;
        return resp;
    }
    match broker
        .producer_ids
        .next(&broker.quorum, broker.config.node_id)
        .await
    {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            warn!(error = %e, "cannot allocate a producer id");
            resp.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
    resp
}
