//! DescribeConfigs for topics (every key Strata understands, explicit or default, the
//! defaults being the broker's live ones) and for the broker (its settings with
//! sources, synonyms and documentation, and the cluster-wide dynamic defaults:
//! `broker_configs`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{broker_configs, str_bytes};
use crate::broker::Broker;
use crate::config::dynamic::Source;
use crate::metadata::topic_config::{self, TOPIC_KEYS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_DEFAULT: i8 = 5;

/// The dynamic broker key whose value a topic key takes when the topic does not set
/// it.
fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    Some(match topic_key {
        "retention.ms" => "log.retention.ms",
        "retention.bytes" => "log.retention.bytes",
        "segment.bytes" => "log.segment.bytes",
        "segment.ms" => "log.roll.ms",
        "flush.messages" => "log.flush.interval.messages",
        "flush.ms" => "log.flush.interval.ms",
        "index.interval.bytes" => "log.index.interval.bytes",
        "max.message.bytes" => "message.max.bytes",
        _ => return None,
    })
}

pub async fn describe(
    broker: &Arc<Broker>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|w| w.as_str() == k))
        };
        let entry = |name: &str, value: String, source: i8, read_only: bool, doc: &str| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(name);
            c.value = Some(str_bytes(value));
            c.read_only = read_only;
            c.config_source = source;
            if version >= 3 {
                c.config_type = 2; // STRING: values are reported verbatim
                if req.include_documentation {
                    c.documentation = Some(str_bytes(doc));
                }
            }
            c
        };
        match res.resource_type {
            RESOURCE_TOPIC => match broker.replicas.topic(res.resource_name.as_str()) {
                None => {
                    out.error_code = ResponseError::UnknownTopicOrPartition.code();
                    out.error_message =
                        Some(str_bytes(format!("unknown topic `{}`", res.resource_name)));
                }
                Some(t) => {
                    let dynamic = broker.replicas.dynamic_values();
                    let live = broker.live_config();
                    for (k, v, default) in topic_config::effective(&t.record.configs, &live) {
                        if wanted(k) {
                            let doc = TOPIC_KEYS
                                .iter()
                                .find(|c| c.name == k)
                                .map_or("", |c| c.doc);
                            let source =
                                match (default, broker_synonym(k).map(|b| dynamic.source(b))) {
                                    (false, _) => SOURCE_DYNAMIC_TOPIC,
                                    (true, Some(Source::Broker)) => SOURCE_DYNAMIC_BROKER,
                                    (true, Some(Source::ClusterDefault)) => {
                                        SOURCE_DYNAMIC_DEFAULT_BROKER
                                    }
                                    (true, _) => SOURCE_DEFAULT,
                                };
                            out.configs.push(entry(k, v, source, false, doc));
                        }
                    }
                }
            },
            RESOURCE_BROKER => {
                if res.resource_name.is_empty() {
                    out.configs = broker_configs::describe_cluster_defaults(
                        &broker.replicas.dynamic_values(),
                        wanted,
                        req.include_synonyms,
                    );
                } else if res.resource_name.as_str() != broker.node_id().to_string() {
                    out.error_code = ResponseError::InvalidRequest.code();
                    out.error_message = Some(str_bytes(format!(
                        "this is broker {}, not `{}`: describe a broker's configs on that broker",
                        broker.node_id(),
                        res.resource_name
                    )));
                } else {
                    out.configs = broker_configs::describe(
                        &broker.config,
                        &broker.replicas.dynamic_values(),
                        wanted,
                        req.include_synonyms,
                        req.include_documentation,
                        version,
                    );
                }
            }
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message =
                    Some(str_bytes(format!("resource type {other} is not supported")));
            }
        }
        resp.results.push(out);
    }
    resp
}
