//! IncrementalAlterConfigs (KIP-339: SET, DELETE, APPEND, SUBTRACT per key) and the
//! older AlterConfigs (replace every key) for topics, as `kafka-configs --alter`,
//! the Java AdminClient and librdkafka send them. The new map is validated whole
//! and committed through the metadata quorum; `validate_only` stops after the
//! validation. The same for brokers, one broker (its id) or all (the empty name,
//! `--entity-default`): the dynamic broker configs ([`crate::config::dynamic`]) are
//! kept in the quorum and apply at run time; a change to a setting read at startup
//! is refused with INVALID_REQUEST naming the Strata setting, as Kafka refuses a
//! config that cannot be updated dynamically, and a bad value with INVALID_CONFIG.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::info;

use super::{metadata_error_code, str_bytes};
use crate::broker::Broker;
use crate::config::dynamic;
use crate::metadata::topic_config;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// One requested change to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Delete,
    Append,
    Subtract,
}

impl Op {
    fn from_code(code: i8) -> Option<Op> {
        match code {
            0 => Some(Op::Set),
            1 => Some(Op::Delete),
            2 => Some(Op::Append),
            3 => Some(Op::Subtract),
            _ => None,
        }
    }
}

/// The keys whose values are comma-separated lists (the only ones APPEND and
/// SUBTRACT apply to).
const LIST_KEYS: &[&str] = &["cleanup.policy"];

/// A topic's configs after `ops`, or why they cannot be applied. Deleting a key
/// returns it to its default; APPEND and SUBTRACT edit list values item by item.
pub fn apply_ops(
    current: &BTreeMap<String, String>,
    ops: &[(String, Op, Option<String>)],
) -> Result<BTreeMap<String, String>, String> {
    let next = edit(current, ops)?;
    topic_config::validate(&next)?;
    Ok(next)
}

/// `current` after `ops`, not validated.
fn edit(
    current: &BTreeMap<String, String>,
    ops: &[(String, Op, Option<String>)],
) -> Result<BTreeMap<String, String>, String> {
    let mut next = current.clone();
    for (key, op, value) in ops {
        match op {
            Op::Set => {
                let v = value
                    .clone()
                    .ok_or_else(|| format!("SET of `{key}` needs a value"))?;
                next.insert(key.clone(), v);
            }
            Op::Delete => {
                next.remove(key);
            }
            Op::Append | Op::Subtract => {
                if !LIST_KEYS.contains(&key.as_str()) {
                    return Err(format!(
                        "`{key}` is not a list: APPEND and SUBTRACT do not apply"
                    ));
                }
                let mut items: Vec<String> = next
                    .get(key)
                    .map(|v| v.split(',').map(|i| i.trim().to_string()).collect())
                    .unwrap_or_default();
                items.retain(|i| !i.is_empty());
                for item in value.as_deref().unwrap_or("").split(',').map(str::trim) {
                    if item.is_empty() {
                        continue;
                    }
                    if *op == Op::Append && !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    } else if *op == Op::Subtract {
                        items.retain(|i| i != item);
                    }
                }
                if items.is_empty() {
                    next.remove(key);
                } else {
                    next.insert(key.clone(), items.join(","));
                }
            }
        }
    }
    Ok(next)
}

/// Applies the new configs of a topic (or only checks them).
async fn alter_topic(
    broker: &Broker,
    name: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let state = broker.cluster();
    let Some(t) = state.topics.get(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic `{name}`"),
        ));
    };
    let next = change(&t.record.configs).map_err(|e| (ResponseError::InvalidConfig, e))?;
    if validate_only {
        return Ok(());
    }
    broker
        .set_topic_configs(name, next)
        .await
        .map_err(|e| (metadata_error_code(&e), e.to_string()))
}

/// Applies new dynamic configs to a broker entity (an id, or `""` for every broker),
/// or only checks them.
pub(crate) async fn alter_broker(
    broker: &Broker,
    entity: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if !dynamic::valid_entity(entity) {
        return Err((
            ResponseError::InvalidRequest,
            format!("`{entity}` is not a broker id"),
        ));
    }
    let current = broker
        .cluster()
        .broker_configs
        .get(entity)
        .cloned()
        .unwrap_or_default();
    let next = change(&current).map_err(|e| (ResponseError::InvalidConfig, e))?;
    let fixed: Vec<String> = next
        .keys()
        .filter(|k| dynamic::key(k).is_none())
        .cloned()
        .collect();
    if !fixed.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            super::broker_configs::refusal(&fixed),
        ));
    }
    dynamic::validate(&next, super::broker_configs::static_reason)
        .map_err(|e| (ResponseError::InvalidConfig, e))?;
    if validate_only || next == current {
        return Ok(());
    }
    info!(entity, configs = ?next, "altering dynamic broker configs");
    broker
        .set_broker_configs(entity, next)
        .await
        .map_err(|e| (metadata_error_code(&e), e.to_string()))
}

/// The answer for a resource that cannot be altered.
fn refuse(resource_type: i8) -> (ResponseError, String) {
    (
        ResponseError::InvalidRequest,
        format!("resource type {resource_type} cannot be altered"),
    )
}

fn outcome(r: Result<(), (ResponseError, String)>) -> (i16, Option<StrBytes>) {
    match r {
        Ok(()) => (0, None),
        Err((code, message)) => (code.code(), Some(str_bytes(message))),
    }
}

pub async fn incremental(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let ops: Result<Vec<(String, Op, Option<String>)>, String> = res
            .configs
            .iter()
            .map(|c| {
                let op = Op::from_code(c.config_operation)
                    .ok_or_else(|| format!("unknown config operation {}", c.config_operation))?;
                Ok((
                    c.name.to_string(),
                    op,
                    c.value.as_ref().map(|v| v.to_string()),
                ))
            })
            .collect();
        let result = match (res.resource_type, ops) {
            (_, Err(e)) => Err((ResponseError::InvalidRequest, e)),
            (RESOURCE_TOPIC, Ok(ops)) => {
                alter_topic(broker, &name, |cur| apply_ops(cur, &ops), req.validate_only).await
            }
            // A DELETE of a key without a dynamic value changes nothing and is fine
            // (kafka-reassign-partitions clears the replication throttles so after
            // every reassignment).
            (RESOURCE_BROKER, Ok(ops)) => {
                alter_broker(broker, &name, |cur| edit(cur, &ops), req.validate_only).await
            }
            (other, Ok(_)) => Err(refuse(other)),
        };
        let mut r = AlterConfigsResourceResponse::default();
        (r.error_code, r.error_message) = outcome(result);
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        resp.responses.push(r);
    }
    resp
}

pub async fn alter(
    broker: &Arc<Broker>,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        // AlterConfigs replaces the whole set: keys left out return to defaults.
        let given: Vec<(String, Option<String>)> = res
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let next: BTreeMap<String, String> = given
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let result = match res.resource_type {
            RESOURCE_TOPIC => {
                let replace = |_: &BTreeMap<String, String>| {
                    topic_config::validate(&next)?;
                    Ok(next)
                };
                alter_topic(broker, &name, replace, req.validate_only).await
            }
            RESOURCE_BROKER => alter_broker(broker, &name, |_| Ok(next), req.validate_only).await,
            other => Err(refuse(other)),
        };
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        (r.error_code, r.error_message) = outcome(result);
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name;
        resp.responses.push(r);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn op(k: &str, op: Op, v: Option<&str>) -> (String, Op, Option<String>) {
        (k.to_string(), op, v.map(str::to_string))
    }

    #[test]
    fn set_delete_append_and_subtract() {
        let cur = map(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let next = apply_ops(
            &cur,
            &[
                op("retention.ms", Op::Set, Some("5000")),
                op("segment.bytes", Op::Delete, None),
            ],
        )
        .unwrap();
        assert_eq!(next, map(&[("retention.ms", "5000")]));
        // Lists: APPEND adds missing items, SUBTRACT removes; an emptied list is unset.
        let next = apply_ops(&cur, &[op("cleanup.policy", Op::Append, Some("delete"))]).unwrap();
        assert_eq!(
            next.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
        let back = apply_ops(&next, &[op("cleanup.policy", Op::Subtract, Some("delete"))]).unwrap();
        assert_eq!(back, cur);
    }

    #[test]
    fn invalid_changes_are_refused_whole() {
        let cur = map(&[("retention.ms", "1000")]);
        assert!(apply_ops(&cur, &[op("retention.ms", Op::Set, Some("soon"))]).is_err());
        assert!(apply_ops(&cur, &[op("no.such.key", Op::Set, Some("1"))]).is_err());
        assert!(apply_ops(&cur, &[op("retention.ms", Op::Append, Some("1"))]).is_err());
        assert!(apply_ops(&cur, &[op("retention.ms", Op::Set, None)]).is_err());
    }
}
