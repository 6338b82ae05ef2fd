//! DescribeConfigs for topics (every key Strata understands, explicit or default) and
//! for the broker (its static settings, read-only, with sources, synonyms and
//! documentation: `broker_configs`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{broker_configs, str_bytes};
use crate::broker::Broker;
use crate::metadata::topic_config::{self, TOPIC_KEYS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
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
                if res.resource_name.is_empty() {
                    // The cluster-wide dynamic defaults (`--entity-default`): none exist.
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
