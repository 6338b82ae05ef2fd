//! The Metadata API: brokers, topics and partition leadership (from
//! `metadata::cluster`), with topic auto-creation when the broker and the request
//! both allow it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::cluster::{ClusterState, TopicMeta};
use crate::metadata::validate_topic_name;
use crate::security::ClientContext;

/// The controller as clients see it: the metadata quorum's leader, -1 when there is
/// none.
pub fn controller_id(broker: &Broker) -> BrokerId {
    BrokerId(
        broker
            .quorum
            .leader()
            .and_then(|l| i32::try_from(l).ok())
            .unwrap_or(-1),
    )
}

/// Brokers are listed with their endpoint on the listener the client came in on;
/// a broker without that listener is left out (its partitions answer
/// LISTENER_NOT_FOUND), as Kafka does.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &ClientContext,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let cfg = &broker.config;
    let listener = &*ctx.listener;
    let mut resp = MetadataResponse::default();
    let state = broker.cluster();
    resp.brokers = state
        .brokers
        .values()
        .filter(|b| state.is_live(b.id))
        .filter_map(|info| {
            let (host, port) = info.endpoint(listener)?;
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(info.id);
            b.host = str_bytes(host);
            b.port = port;
            if version >= 1 {
                b.rack = info.rack.clone().map(str_bytes);
            }
            Some(b)
        })
        .collect();
    if version >= 2 {
        resp.cluster_id = Some(str_bytes(cfg.cluster_id.clone()));
    }
    if version >= 1 {
        resp.controller_id = controller_id(broker);
    }
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    resp.topics = match wanted {
        None => state
            .topics
            .values()
            .map(|t| describe(&state, t, version, listener))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                if let Some(name) = t.name {
                    out.push(
                        lookup_or_create(broker, &name.0, allow_create, version, listener).await,
                    );
                } else {
                    match state.topics.values().find(|m| m.record.id == t.topic_id) {
                        Some(meta) => out.push(describe(&state, meta, version, listener)),
                        None => {
                            let mut e = MetadataResponseTopic::default();
                            e.error_code = ResponseError::UnknownTopicId.code();
                            e.topic_id = t.topic_id;
                            out.push(e);
                        }
                    }
                }
            }
            out
        }
    };
    resp
}

async fn lookup_or_create(
    broker: &Arc<Broker>,
    name: &str,
    allow_create: bool,
    version: i16,
    listener: &str,
) -> MetadataResponseTopic {
    let state = broker.cluster();
    if let Some(t) = state.topics.get(name) {
        return describe(&state, t, version, listener);
    }
    let mut e = MetadataResponseTopic::default();
    e.name = Some(TopicName(str_bytes(name)));
    if let Err(err) = validate_topic_name(name) {
        e.error_code = metadata_error_code(&err).code();
        return e;
    }
    if !(allow_create && broker.config.auto_create_topics) {
        e.error_code = ResponseError::UnknownTopicOrPartition.code();
        return e;
    }
    match broker
        .create_topic(name, -1, -1, BTreeMap::new(), false)
        .await
    {
        // Created, or another connection created it first: describe what committed.
        Ok(_) | Err(crate::metadata::MetadataError::TopicExists(_)) => {
            let state = broker.cluster();
            match state.topics.get(name) {
                Some(t) => describe(&state, t, version, listener),
                None => {
                    e.error_code = ResponseError::LeaderNotAvailable.code();
                    e
                }
            }
        }
        Err(err) => {
            e.error_code = metadata_error_code(&err).code();
            e
        }
    }
}

fn describe(
    state: &ClusterState,
    t: &TopicMeta,
    version: i16,
    listener: &str,
) -> MetadataResponseTopic {
    let mut r = MetadataResponseTopic::default();
    r.name = Some(TopicName(str_bytes(t.record.name.clone())));
    if version >= 10 {
        r.topic_id = t.record.id;
    }
    if version >= 1 {
        r.is_internal = t.record.internal;
    }
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    r.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = i as i32;
            let reachable = state
                .brokers
                .get(&p.leader)
                .is_some_and(|b| b.endpoint(listener).is_some());
            let leader = if p.leader >= 0 && state.is_live(p.leader) && reachable {
                p.leader
            } else {
                -1
            };
            if leader < 0 {
                mp.error_code = if p.leader >= 0 && state.is_live(p.leader) {
                    ResponseError::ListenerNotFound.code()
                } else {
                    ResponseError::LeaderNotAvailable.code()
                };
            }
            mp.leader_id = BrokerId(leader);
            if version >= 7 {
                mp.leader_epoch = p.leader_epoch;
            }
            mp.replica_nodes = ids(&p.replicas);
            mp.isr_nodes = ids(&p.isr);
            if version >= 5 {
                let offline: Vec<i32> = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !state.is_live(*b))
                    .collect();
                mp.offline_replicas = ids(&offline);
            }
            mp
        })
        .collect();
    r
}
