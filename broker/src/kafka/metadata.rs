//! Metadata: brokers, topics and partition leadership, with topic auto-creation when
//! the broker and the request both allow it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{metadata_error_code, s};
use crate::broker::{Broker, TopicState};
use crate::metadata::validate_topic_name;

pub async fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let cfg = &broker.config;
    let node = cfg.node_id;
    let mut resp = MetadataResponse::default();
    let (host, port) = cfg.advertised();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(node);
    b.host = s(host);
    b.port = port;
    if version >= 1 {
        b.rack = cfg.rack.clone().map(s);
    }
    resp.brokers = vec![b];
    if version >= 2 {
        resp.cluster_id = Some(s(cfg.cluster_id.clone()));
    }
    if version >= 1 {
        resp.controller_id = BrokerId(node);
    }
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    resp.topics = match wanted {
        None => broker
            .all_topics()
            .iter()
            .map(|t| describe(t, node, version))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                if let Some(name) = t.name {
                    out.push(lookup_or_create(broker, &name.0, allow_create, version).await);
                } else {
                    match broker.topic_by_id(&t.topic_id) {
                        Some(state) => out.push(describe(&state, node, version)),
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
) -> MetadataResponseTopic {
    let node = broker.config.node_id;
    if let Some(t) = broker.topic(name) {
        return describe(&t, node, version);
    }
    let mut e = MetadataResponseTopic::default();
    e.name = Some(TopicName(s(name)));
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
        Ok(t) => describe(&t, node, version),
        // Another connection created it first.
        Err(crate::metadata::MetadataError::TopicExists(_)) => match broker.topic(name) {
            Some(t) => describe(&t, node, version),
            None => {
                e.error_code = ResponseError::LeaderNotAvailable.code();
                e
            }
        },
        Err(err) => {
            e.error_code = metadata_error_code(&err).code();
            e
        }
    }
}

fn describe(t: &TopicState, node: i32, version: i16) -> MetadataResponseTopic {
    let mut r = MetadataResponseTopic::default();
    r.name = Some(TopicName(s(t.record.name.clone())));
    if version >= 10 {
        r.topic_id = t.record.id;
    }
    if version >= 1 {
        r.is_internal = t.record.internal;
    }
    r.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.index;
            mp.leader_id = BrokerId(node);
            if version >= 7 {
                mp.leader_epoch = p.leader_epoch();
            }
            mp.replica_nodes = vec![BrokerId(node)];
            mp.isr_nodes = vec![BrokerId(node)];
            mp
        })
        .collect();
    r
}
