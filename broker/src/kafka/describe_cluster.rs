//! DescribeCluster (KIP-700): the cluster id, the controller (the metadata quorum's
//! leader) and the brokers, which the Java AdminClient's `describeCluster` and the
//! tools built on it use instead of Metadata. Brokers the controller fenced are
//! listed only when asked for (v2), marked fenced. Only the broker endpoint type is
//! served: clients reach the controllers through the brokers here.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use super::topic_metadata::controller_id;
use crate::broker::Broker;
use crate::metadata::cluster::BrokerStatus;
use crate::security::ClientContext;

/// `endpoint_type` of a request for the brokers (1) or the controllers (2).
const BROKERS: i8 = 1;
/// Authorized operations not computed (the request did not ask, or no ACLs here).
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &ClientContext,
    req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = BROKERS;
    resp.cluster_authorized_operations = OPERATIONS_OMITTED;
    if version >= 1 && req.endpoint_type != BROKERS {
        resp.error_code = ResponseError::UnsupportedEndpointType.code();
        resp.error_message = Some(str_bytes(
            "only the broker endpoint type is served; the controllers are reached through the brokers"
                .to_string(),
        ));
        return resp;
    }
    let state = broker.cluster();
    resp.cluster_id = str_bytes(broker.config.cluster_id.clone());
    resp.controller_id = controller_id(broker);
    let with_fenced = version >= 2 && req.include_fenced_brokers;
    resp.brokers = state
        .brokers
        .values()
        .filter(|b| with_fenced || state.is_live(b.id))
        .filter_map(|info| {
            // The endpoints of the client's listener; brokers without it are left out.
            let (host, port) = info.endpoint(&ctx.listener)?;
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(info.id);
            b.host = str_bytes(host);
            b.port = port;
            b.rack = info.rack.clone().map(str_bytes);
            b.is_fenced = info.status == BrokerStatus::Fenced;
            Some(b)
        })
        .collect();
    resp
}
