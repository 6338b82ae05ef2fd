//! The broker's settings under their Kafka names, as DescribeConfigs reports them for a
//! BROKER resource: value, source (a dynamic value of this broker or of the cluster
//! default, a setting of this broker, or Kafka's default), synonyms, type and
//! documentation, each tied to the Strata setting that sets it. The keys of
//! [`crate::config::dynamic`] change at run time; an alteration of any other is
//! refused naming the Strata setting to change instead ([`refusal`]).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsSynonym,
};

use super::str_bytes;
use crate::config::dynamic::{self, DynamicValues, Source};
use crate::config::BrokerConfig;

/// Kafka's config source codes.
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's config type codes.
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const SHORT: i8 = 4;
const LONG: i8 = 5;

/// One broker setting under its Kafka name.
struct BrokerKey {
    kafka: &'static str,
    /// The Strata setting (file key; `STRATA_<KEY>` in the environment).
    strata: &'static str,
    config_type: i8,
    doc: &'static str,
    value: fn(&BrokerConfig) -> Option<String>,
}

macro_rules! key {
    ($kafka:literal, $field:ident, $t:expr, $doc:literal) => {
        BrokerKey {
            kafka: $kafka,
            strata: stringify!($field),
            config_type: $t,
            doc: $doc,
            value: |c| Some(c.$field.to_string()),
        }
    };
}

const KEYS: &[BrokerKey] = &[
    key!("node.id", node_id, INT, "The broker's id."),
    BrokerKey {
        kafka: "listeners",
        strata: "listeners",
        config_type: STRING,
        doc: "The Kafka listeners and the addresses they bind (listeners, or kafka_listen alone).",
        value: |c| {
            crate::security::listeners::listeners(c).ok().map(|all| {
                all.iter()
                    .map(|l| format!("{}://{}", l.name, l.bind))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        },
    },
    BrokerKey {
        kafka: "advertised.listeners",
        strata: "advertised_listeners",
        config_type: STRING,
        doc: "The address each listener tells clients to connect to (advertised_listeners, or advertised_host and advertised_port).",
        value: |c| {
            crate::security::listeners::listeners(c).ok().map(|all| {
                all.iter()
                    .map(|l| format!("{}://{}:{}", l.name, l.advertised_host, l.advertised_port))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        },
    },
    key!(
        "listener.security.protocol.map",
        listener_security_protocol_map,
        STRING,
        "The security protocol of each named listener (NAME:PROTOCOL)."
    ),
    key!(
        "inter.broker.listener.name",
        inter_broker_listener_name,
        STRING,
        "The PLAINTEXT listener other brokers send Kafka requests to (empty: the first)."
    ),
    key!(
        "ssl.client.auth",
        ssl_client_auth,
        STRING,
        "Client certificates on TLS listeners: none, requested or required."
    ),
    key!(
        "ssl.principal.mapping.rules",
        ssl_principal_mapping_rules,
        STRING,
        "How a client certificate's subject becomes the principal name."
    ),
    key!(
        "sasl.enabled.mechanisms",
        sasl_enabled_mechanisms,
        STRING,
        "The SASL mechanisms offered on SASL listeners."
    ),
    key!(
        "connections.max.reauth.ms",
        connections_max_reauth_ms,
        LONG,
        "The SASL session lifetime; clients re-authenticate before it ends (0: never)."
    ),
    key!(
        "sasl.server.max.receive.size",
        sasl_server_max_receive_size,
        INT,
        "The largest request accepted before a SASL client has authenticated."
    ),
    key!(
        "authorizer.class.name",
        authorizer_class_name,
        STRING,
        "The authorizer checking requests against the ACLs (empty: none)."
    ),
    key!(
        "super.users",
        super_users,
        STRING,
        "Principals allowed every operation (User:a;User:b)."
    ),
    key!(
        "allow.everyone.if.no.acl.found",
        allow_everyone_if_no_acl_found,
        BOOLEAN,
        "Allow requests on resources that no ACL exists for."
    ),
    BrokerKey {
        kafka: "broker.rack",
        strata: "rack",
        config_type: STRING,
        doc: "The rack of the broker, for rack-aware replica placement.",
        value: |c| c.rack.clone(),
    },
    BrokerKey {
        kafka: "log.dirs",
        strata: "data_dir",
        config_type: STRING,
        doc: "The directory partition logs and metadata are kept in.",
        value: |c| Some(c.data_dir.display().to_string()),
    },
    key!(
        "auto.create.topics.enable",
        auto_create_topics,
        BOOLEAN,
        "Create an unknown topic when a Metadata request allows it."
    ),
    key!(
        "num.partitions",
        default_partitions,
        INT,
        "Partitions of auto-created topics and of CreateTopics with -1."
    ),
    key!(
        "default.replication.factor",
        default_replication_factor,
        SHORT,
        "Replication factor of auto-created topics and of CreateTopics with -1."
    ),
    key!(
        "socket.request.max.bytes",
        max_request_bytes,
        INT,
        "Largest request frame accepted; a larger one closes its connection."
    ),
    key!(
        "max.connections",
        max_connections,
        INT,
        "Client connections accepted at once; more are refused."
    ),
    key!(
        "queued.max.request.bytes",
        queued_max_request_bytes,
        LONG,
        "Request bytes held in memory at once over all connections."
    ),
    key!(
        "log.segment.bytes",
        log_segment_bytes,
        INT,
        "Default segment.bytes of topics."
    ),
    key!(
        "log.roll.ms",
        log_segment_ms,
        LONG,
        "Default segment.ms of topics."
    ),
    key!(
        "log.retention.ms",
        log_retention_ms,
        LONG,
        "Default retention.ms of topics."
    ),
    key!(
        "log.retention.bytes",
        log_retention_bytes,
        LONG,
        "Default retention.bytes of topics."
    ),
    key!(
        "log.retention.check.interval.ms",
        retention_check_interval_ms,
        LONG,
        "How often retention runs."
    ),
    key!(
        "log.flush.interval.messages",
        log_flush_messages,
        LONG,
        "Default flush.messages of topics."
    ),
    key!(
        "log.flush.interval.ms",
        log_flush_ms,
        LONG,
        "Default flush.ms of topics."
    ),
    key!(
        "log.index.interval.bytes",
        log_index_interval_bytes,
        INT,
        "Bytes between two entries of the offset index."
    ),
    key!(
        "message.max.bytes",
        log_max_message_bytes,
        INT,
        "Default max.message.bytes of topics (largest record batch)."
    ),
    key!(
        "log.cleaner.io.max.bytes.per.second",
        log_cleaner_io_max_bytes_per_second,
        LONG,
        "Bytes per second the log cleaner reads and writes at most (0: unlimited)."
    ),
    key!(
        "leader.replication.throttled.rate",
        leader_replication_throttled_rate,
        LONG,
        "Bytes per second served to followers of throttled replicas (reassignments)."
    ),
    key!(
        "follower.replication.throttled.rate",
        follower_replication_throttled_rate,
        LONG,
        "Bytes per second fetched for throttled follower replicas (reassignments)."
    ),
    key!(
        "offsets.topic.num.partitions",
        offsets_topic_partitions,
        INT,
        "Partitions of __consumer_offsets."
    ),
    key!(
        "offsets.topic.replication.factor",
        offsets_topic_replication_factor,
        SHORT,
        "Replication factor of __consumer_offsets."
    ),
    key!(
        "offsets.topic.segment.bytes",
        offsets_segment_bytes,
        INT,
        "Segment size of __consumer_offsets."
    ),
    key!(
        "offset.metadata.max.bytes",
        offset_metadata_max_bytes,
        INT,
        "Largest metadata string of a committed offset."
    ),
    key!(
        "transaction.state.log.num.partitions",
        transaction_state_partitions,
        INT,
        "Partitions of __transaction_state."
    ),
    key!(
        "transaction.max.timeout.ms",
        transaction_max_timeout_ms,
        INT,
        "Longest transaction timeout a producer may ask for."
    ),
    key!(
        "transactional.id.expiration.ms",
        transactional_id_expiration_ms,
        INT,
        "How long an idle transactional id is kept."
    ),
    key!(
        "producer.id.expiration.ms",
        producer_id_expiration_ms,
        INT,
        "How long an idle producer id's state is kept."
    ),
    key!(
        "group.initial.rebalance.delay.ms",
        group_initial_rebalance_delay_ms,
        INT,
        "How long a new group waits for more members before its first rebalance."
    ),
    key!(
        "group.min.session.timeout.ms",
        group_min_session_timeout_ms,
        INT,
        "Smallest session timeout a group member may ask for."
    ),
    key!(
        "group.max.session.timeout.ms",
        group_max_session_timeout_ms,
        INT,
        "Largest session timeout a group member may ask for."
    ),
    key!(
        "controller.quorum.voters",
        controller_voters,
        STRING,
        "The metadata quorum's voters (id@host:port)."
    ),
    key!(
        "broker.heartbeat.interval.ms",
        broker_heartbeat_interval_ms,
        INT,
        "How often the broker heartbeats to the controller."
    ),
    key!(
        "broker.session.timeout.ms",
        broker_session_timeout_ms,
        INT,
        "Silence after which the controller fences a broker."
    ),
    key!(
        "replica.lag.time.max.ms",
        replica_lag_time_max_ms,
        LONG,
        "How long a follower may lag before it leaves the ISR."
    ),
    key!(
        "auto.leader.rebalance.enable",
        auto_leader_rebalance_enable,
        BOOLEAN,
        "Move leadership back to preferred replicas on its own."
    ),
    key!(
        "leader.imbalance.check.interval.seconds",
        leader_imbalance_check_interval_seconds,
        LONG,
        "How long a leader imbalance lasts before the controller moves leadership back."
    ),
    key!(
        "replica.fetch.wait.max.ms",
        replica_fetch_max_wait_ms,
        INT,
        "Longest wait of a follower's fetch."
    ),
    key!(
        "replica.fetch.max.bytes",
        replica_fetch_max_bytes,
        INT,
        "Bytes a follower asks for per partition and fetch."
    ),
];

/// The broker's settings the `wanted` filter keeps, in Kafka's shape: live values
/// (`config` overlaid with `dynamic`), their source, whether they are read-only, and
/// with `synonyms` the values in order of precedence (this broker's dynamic value,
/// the cluster default, this broker's setting, then Kafka's default where it
/// differs).
pub fn describe(
    config: &BrokerConfig,
    dynamic: &DynamicValues,
    wanted: impl Fn(&str) -> bool,
    synonyms: bool,
    documentation: bool,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    let defaults = BrokerConfig::default();
    let live = dynamic.overlay(config);
    KEYS.iter()
        .filter(|k| wanted(k.kafka))
        .map(|k| {
            let configured = (k.value)(config);
            let default = (k.value)(&defaults);
            let is_dynamic = dynamic::key(k.kafka).is_some();
            let source = match dynamic.source(k.kafka) {
                Source::Broker => SOURCE_DYNAMIC_BROKER,
                Source::ClusterDefault => SOURCE_DYNAMIC_DEFAULT_BROKER,
                Source::Static if configured == default => SOURCE_DEFAULT,
                Source::Static => SOURCE_STATIC_BROKER,
            };
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(k.kafka);
            c.value = (k.value)(&live).map(str_bytes);
            c.read_only = !is_dynamic;
            c.config_source = source;
            c.documentation = None;
            if synonyms {
                let synonym = |value: Option<String>, source| {
                    let mut s = DescribeConfigsSynonym::default();
                    s.name = str_bytes(k.kafka);
                    s.value = value.map(str_bytes);
                    s.source = source;
                    s
                };
                if let Some(v) = dynamic.broker.get(k.kafka) {
                    c.synonyms.push(synonym(Some(v.clone()), SOURCE_DYNAMIC_BROKER));
                }
                if let Some(v) = dynamic.cluster.get(k.kafka) {
                    c.synonyms
                        .push(synonym(Some(v.clone()), SOURCE_DYNAMIC_DEFAULT_BROKER));
                }
                if configured != default {
                    c.synonyms.push(synonym(configured, SOURCE_STATIC_BROKER));
                }
                c.synonyms.push(synonym(default, SOURCE_DEFAULT));
            }
            if version >= 3 {
                c.config_type = k.config_type;
                if documentation {
                    let how = if is_dynamic {
                        "dynamic: kafka-configs --entity-type brokers --alter changes it at run time"
                    } else {
                        "read at startup"
                    };
                    c.documentation = Some(str_bytes(format!(
                        "{} Strata setting `{}` (environment STRATA_{}); {how}.",
                        k.doc,
                        k.strata,
                        k.strata.to_uppercase()
                    )));
                }
            }
            c
        })
        .collect()
}

/// The cluster-wide dynamic defaults (`kafka-configs --entity-default`), as Kafka
/// describes the empty broker name: only the keys set there.
pub fn describe_cluster_defaults(
    dynamic: &DynamicValues,
    wanted: impl Fn(&str) -> bool,
    synonyms: bool,
) -> Vec<DescribeConfigsResourceResult> {
    dynamic
        .cluster
        .iter()
        .filter(|(k, _)| wanted(k))
        .map(|(k, v)| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = str_bytes(k.clone());
            c.value = Some(str_bytes(v.clone()));
            c.config_source = SOURCE_DYNAMIC_DEFAULT_BROKER;
            if synonyms {
                let mut s = DescribeConfigsSynonym::default();
                s.name = str_bytes(k.clone());
                s.value = Some(str_bytes(v.clone()));
                s.source = SOURCE_DYNAMIC_DEFAULT_BROKER;
                c.synonyms.push(s);
            }
            c
        })
        .collect()
}

/// Why one broker key cannot be altered at run time.
pub fn static_reason(key: &str) -> String {
    match KEYS.iter().find(|k| k.kafka == key) {
        Some(k) => format!(
            "{key} is read at startup (Strata setting `{}`, environment STRATA_{})",
            k.strata,
            k.strata.to_uppercase()
        ),
        None => format!("{key} is not a broker config Strata has"),
    }
}

/// Why broker settings cannot be altered: what to set instead, key by key.
pub fn refusal(keys: &[String]) -> String {
    let reasons: Vec<String> = keys.iter().map(|k| static_reason(k)).collect();
    format!(
        "cannot update these broker configs dynamically: {}; change the setting and restart \
         the broker",
        reasons.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_of_this_broker_is_static_with_kafkas_default_as_its_synonym() {
        let config = BrokerConfig {
            log_retention_ms: 3_600_000,
            ..BrokerConfig::default()
        };
        let all = describe(&config, &DynamicValues::default(), |_| true, true, true, 4);
        assert_eq!(all.len(), KEYS.len());
        let r = all
            .iter()
            .find(|c| c.name.as_str() == "log.retention.ms")
            .unwrap();
        assert_eq!(r.value.as_deref(), Some("3600000"));
        assert_eq!(r.config_source, SOURCE_STATIC_BROKER);
        assert!(!r.read_only, "log.retention.ms is dynamic");
        assert_eq!(r.config_type, LONG);
        let sources: Vec<i8> = r.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(sources, [SOURCE_STATIC_BROKER, SOURCE_DEFAULT]);
        assert!(r
            .documentation
            .as_deref()
            .unwrap()
            .contains("STRATA_LOG_RETENTION_MS"));
        let d = all
            .iter()
            .find(|c| c.name.as_str() == "num.partitions")
            .unwrap();
        assert_eq!((d.config_source, d.synonyms.len()), (SOURCE_DEFAULT, 1));
        // Only the keys asked for; an unset rack has no value.
        let rack = describe(
            &config,
            &DynamicValues::default(),
            |k| k == "broker.rack",
            false,
            false,
            1,
        );
        assert_eq!(rack.len(), 1);
        assert_eq!(rack[0].value, None);
        assert!(rack[0].synonyms.is_empty() && rack[0].documentation.is_none());
    }

    #[test]
    fn dynamic_values_win_in_order_and_show_as_synonyms() {
        let config = BrokerConfig {
            log_retention_ms: 3_600_000,
            ..BrokerConfig::default()
        };
        let mut dynamic = DynamicValues::default();
        dynamic
            .cluster
            .insert("log.retention.ms".into(), "7200000".into());
        dynamic
            .cluster
            .insert("log.segment.bytes".into(), "1048576".into());
        dynamic
            .broker
            .insert("log.retention.ms".into(), "60000".into());
        let all = describe(&config, &dynamic, |_| true, true, false, 4);
        let find = |name: &str| all.iter().find(|c| c.name.as_str() == name).unwrap();
        let r = find("log.retention.ms");
        assert_eq!(r.value.as_deref(), Some("60000"));
        assert_eq!(r.config_source, SOURCE_DYNAMIC_BROKER);
        let sources: Vec<i8> = r.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [
                SOURCE_DYNAMIC_BROKER,
                SOURCE_DYNAMIC_DEFAULT_BROKER,
                SOURCE_STATIC_BROKER,
                SOURCE_DEFAULT
            ]
        );
        let seg = find("log.segment.bytes");
        assert_eq!(
            (seg.value.as_deref(), seg.config_source),
            (Some("1048576"), SOURCE_DYNAMIC_DEFAULT_BROKER)
        );
        assert!(find("num.partitions").read_only);
        let defaults = describe_cluster_defaults(&dynamic, |_| true, true);
        assert_eq!(defaults.len(), 2);
        assert!(defaults
            .iter()
            .all(|c| c.config_source == SOURCE_DYNAMIC_DEFAULT_BROKER));
    }

    #[test]
    fn a_refusal_names_the_setting_to_change() {
        let why = refusal(&["log.retention.ms".into(), "no.such.key".into()]);
        assert!(why.contains("STRATA_LOG_RETENTION_MS"), "{why}");
        assert!(why.contains("no.such.key is not a broker config"), "{why}");
        assert!(why.contains("dynamically"), "{why}");
    }
}
