//! DescribeConfigs for topics (every key Strata understands, explicit or default) and
//! for the broker (its static settings, read-only).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use crate::broker::Broker;
use crate::metadata::topic_config::{self, TOPIC_KEYS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

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
                    for (k, v, default) in
                        topic_config::effective(&t.record.configs, &broker.config)
                    {
                        if wanted(k) {
                            let doc = TOPIC_KEYS
                                .iter()
                                .find(|c| c.name == k)
                                .map_or("", |c| c.doc);
                            let source = if default {
                                SOURCE_DEFAULT
                            } else {
                                SOURCE_DYNAMIC_TOPIC
                            };
                            out.configs.push(entry(k, v, source, false, doc));
                        }
                    }
                }
            },
            RESOURCE_BROKER => {
                let c = &broker.config;
                let (host, port) = c.advertised();
                let items = [
                    ("node.id", c.node_id.to_string()),
                    ("advertised.listeners", format!("PLAINTEXT://{host}:{port}")),
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                    ),
                    ("num.partitions", c.default_partitions.to_string()),
                    (
                        "default.replication.factor",
                        c.default_replication_factor.to_string(),
                    ),
                    ("socket.request.max.bytes", c.max_request_bytes.to_string()),
                    ("log.segment.bytes", c.log_segment_bytes.to_string()),
                    ("log.retention.ms", c.log_retention_ms.to_string()),
                    ("log.retention.bytes", c.log_retention_bytes.to_string()),
                    ("message.max.bytes", c.log_max_message_bytes.to_string()),
                ];
                for (k, v) in items {
                    if wanted(k) {
                        out.configs
                            .push(entry(k, v, SOURCE_STATIC_BROKER, true, ""));
                    }
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
