//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::metadata::topic_config;

pub async fn create_topics(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    let mut seen = HashSet::new();
    let dupes: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let fail = |r: &mut CreatableTopicResult, code: ResponseError, msg: String| {
            r.error_code = code.code();
            if version >= 1 {
                r.error_message = Some(str_bytes(msg));
            }
        };
        if dupes.contains(&name) {
            fail(
                &mut r,
                ResponseError::InvalidRequest,
                format!("topic `{name}` appears more than once"),
            );
            resp.topics.push(r);
            continue;
        }
        let cluster = broker.cluster();
        if let Some(unknown) = t
            .assignments
            .iter()
            .flat_map(|a| a.broker_ids.iter())
            .find(|b| !cluster.brokers.contains_key(&b.0))
        {
            fail(
                &mut r,
                ResponseError::InvalidReplicaAssignment,
                format!("replica assignment names unknown broker {}", unknown.0),
            );
            resp.topics.push(r);
            continue;
        }
        let (partitions, rf) = if t.assignments.is_empty() {
            (t.num_partitions, t.replication_factor)
        } else {
            let rf = t
                .assignments
                .first()
                .map_or(1, |a| a.broker_ids.len() as i16);
            (t.assignments.len() as i32, rf)
        };
        let mut configs = BTreeMap::new();
        let mut bad_config = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => bad_config = Some(format!("config `{}` has no value", c.name)),
            }
        }
        if let Some(msg) = bad_config {
            fail(&mut r, ResponseError::InvalidConfig, msg);
            resp.topics.push(r);
            continue;
        }
        let created = if t.assignments.is_empty() {
            broker
                .create_topic(&name, partitions, rf, configs, req.validate_only)
                .await
        } else {
            let mut placed: Vec<_> = t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            placed.sort_by_key(|(p, _)| *p);
            let assignment = placed.into_iter().map(|(_, replicas)| replicas).collect();
            broker
                .create_topic_assigned(&name, assignment, configs, req.validate_only)
                .await
        };
        match created {
            Ok(state) => {
                if version >= 7 {
                    r.topic_id = state.record.id;
                }
                if version >= 5 {
                    r.num_partitions = state.record.partitions;
                    r.replication_factor = state.record.replication_factor;
                    r.configs = Some(
                        topic_config::effective(&state.record.configs, &broker.config)
                            .into_iter()
                            .map(|(k, v, default)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(k);
                                c.value = Some(str_bytes(v));
                                c.config_source = if default { 5 } else { 1 };
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => fail(&mut r, metadata_error_code(&e), e.to_string()),
        }
        resp.topics.push(r);
    }
    resp
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    // v6 names topics by name or id; earlier versions by name only.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        let resolved = match &name {
            Some(n) => Some(n.clone()),
            None => broker
                .replicas
                .topic_by_id(&id)
                .map(|t| t.record.name.clone()),
        };
        if version >= 6 {
            r.topic_id = id;
        }
        r.name = resolved
            .clone()
            .or(name.clone())
            .map(|n| TopicName(str_bytes(n)));
        match resolved {
            None => {
                r.error_code = ResponseError::UnknownTopicId.code();
            }
            Some(n) => match broker.delete_topic(&n).await {
                Ok(rec) => {
                    if version >= 6 {
                        r.topic_id = rec.id;
                    }
                }
                Err(e) => {
                    r.error_code = metadata_error_code(&e).code();
                    if version >= 5 {
                        r.error_message = Some(str_bytes(e.to_string()));
                    }
                }
            },
        }
        resp.responses.push(r);
    }
    resp
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if let Err(e) = broker
            .create_partitions(&t.name.0, t.count, req.validate_only)
            .await
        {
            r.error_code = metadata_error_code(&e).code();
            r.error_message = Some(str_bytes(e.to_string()));
        }
        resp.results.push(r);
    }
    resp
}
