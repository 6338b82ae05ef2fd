//! Topic-level configuration: the keys a topic may set, their validation and how they
//! resolve over the broker defaults into a [`LogConfig`].

use std::collections::BTreeMap;

use crate::config::BrokerConfig;
use crate::log::LogConfig;

pub mod compaction;

/// A topic config key we understand.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    pub name: &'static str,
    pub doc: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Long {
        min: i64,
        max: i64,
    },
    Bool,
    OneOf(&'static [&'static str]),
    Ratio,
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker,...`.
    ReplicaList,
}

/// Every topic config key Strata accepts.
pub const TOPIC_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        doc: "`delete` (retention), `compact` (the log cleaner keeps the latest record per key) or both.",
        kind: Kind::OneOf(&["delete", "compact", "compact,delete", "delete,compact"]),
    },
    ConfigKey {
        name: "delete.retention.ms",
        doc: "How long the cleaner keeps a tombstone of a compacted topic.",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "min.cleanable.dirty.ratio",
        doc: "Share of a compacted log not cleaned yet at which the cleaner cleans it (0 to 1).",
        kind: Kind::Ratio,
    },
    ConfigKey {
        name: "min.compaction.lag.ms",
        doc: "Records younger than this are not compacted.",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "max.compaction.lag.ms",
        doc: "A compacted log with records older than this not cleaned yet is cleaned whatever its dirty ratio.",
        kind: Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "retention.ms",
        doc: "Delete segments whose newest record is older (-1: forever).",
        kind: Kind::Long {
            min: -1,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "retention.bytes",
        doc: "Delete old segments while a partition is larger (-1: no limit).",
        kind: Kind::Long {
            min: -1,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "segment.bytes",
        doc: "Segment size before a roll (at most 2147483647: byte positions in a segment are 32-bit).",
        kind: Kind::Long {
            min: 1024,
            max: i32::MAX as i64,
        },
    },
    ConfigKey {
        name: "segment.ms",
        doc: "Segment age before a roll.",
        kind: Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "flush.messages",
        doc: "fsync after this many messages.",
        kind: Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "flush.ms",
        doc: "fsync unflushed data this old.",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "index.interval.bytes",
        doc: "Bytes between index entries.",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "max.message.bytes",
        doc: "Largest record batch accepted.",
        kind: Kind::Long {
            min: 0,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "message.timestamp.type",
        doc: "CreateTime or LogAppendTime.",
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    },
    ConfigKey {
        name: "min.insync.replicas",
        doc: "Replicas that must acknowledge an acks=all write.",
        kind: Kind::Long {
            min: 1,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        doc: "Allow an out-of-sync replica to lead.",
        kind: Kind::Bool,
    },
    ConfigKey {
        name: "compression.type",
        doc: "Only `producer` (batches are stored as sent).",
        kind: Kind::OneOf(&["producer"]),
    },
    ConfigKey {
        name: "remote.storage.enable",
        doc: "Upload closed segments to the tier.",
        kind: Kind::Bool,
    },
    ConfigKey {
        name: "local.retention.ms",
        doc: "How long tiered data stays on local disk (-2: retention.ms).",
        kind: Kind::Long {
            min: -2,
            max: i64::MAX,
        },
    },
    ConfigKey {
        name: "leader.replication.throttled.replicas",
        doc: "Replicas (`partition:broker,...` or `*`) whose leaders serve out-of-sync followers at most `leader.replication.throttled.rate`.",
        kind: Kind::ReplicaList,
    },
    ConfigKey {
        name: "follower.replication.throttled.replicas",
        doc: "Follower replicas (`partition:broker,...` or `*`) that catch up at most at `follower.replication.throttled.rate`.",
        kind: Kind::ReplicaList,
    },
    ConfigKey {
        name: "local.retention.bytes",
        doc: "How much tiered data stays on local disk (-2: retention.bytes).",
        kind: Kind::Long {
            min: -2,
            max: i64::MAX,
        },
    },
];

/// Checks one key/value pair; the error is a client-facing message.
pub fn validate_entry(key: &str, value: &str) -> Result<(), String> {
    let Some(k) = TOPIC_KEYS.iter().find(|k| k.name == key) else {
        return Err(format!("unknown topic config `{key}`"));
    };
    match k.kind {
        Kind::Long { min, max } => match value.parse::<i64>() {
            Ok(v) if v >= min && v <= max => Ok(()),
            Ok(v) if v < min => Err(format!("`{key}` must be >= {min}, got {v}")),
            Ok(v) => Err(format!("`{key}` must be <= {max}, got {v}")),
            Err(_) => Err(format!("`{key}` must be an integer, got `{value}`")),
        },
        Kind::Bool => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("`{key}` must be true or false, got `{value}`")),
        },
        Kind::Ratio => match value.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!(
                "`{key}` must be a number between 0 and 1, got `{value}`"
            )),
        },
        Kind::OneOf(options) => {
            if options.contains(&value) {
                Ok(())
            } else {
                Err(format!("`{key}` must be one of {options:?}, got `{value}`"))
            }
        }
        Kind::ReplicaList => parse_replica_list(value)
            .map(|_| ())
            .map_err(|e| format!("`{key}` must be `*` or a list of partition:broker pairs: {e}")),
    }
}

/// A parsed throttled-replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaList {
    /// `*`: every replica of the topic.
    All,
    /// `(partition, broker)` pairs.
    Some(Vec<(i32, i32)>),
}

impl ReplicaList {
    pub fn contains(&self, partition: i32, broker: i32) -> bool {
        match self {
            ReplicaList::All => true,
            ReplicaList::Some(pairs) => pairs.contains(&(partition, broker)),
        }
    }
}

/// Parses Kafka's `partition:broker,...` list (whitespace allowed, empty = none).
pub fn parse_replica_list(value: &str) -> Result<ReplicaList, String> {
    let value = value.trim();
    if value == "*" {
        return Ok(ReplicaList::All);
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (p, b) = e
                .split_once(':')
                .ok_or_else(|| format!("`{e}` is not partition:broker"))?;
            let p = p.trim().parse::<i32>().ok().filter(|p| *p >= 0);
            let b = b.trim().parse::<i32>().ok().filter(|b| *b >= 0);
            p.zip(b)
                .ok_or_else(|| format!("`{e}` is not two non-negative integers"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(ReplicaList::Some)
}

/// Whether the topic's `key` (one of the throttled-replica lists) names the replica
/// of `partition` on `broker`.
pub fn lists_replica(
    configs: &BTreeMap<String, String>,
    key: &str,
    partition: i32,
    broker: i32,
) -> bool {
    configs
        .get(key)
        .and_then(|v| parse_replica_list(v).ok())
        .is_some_and(|l| l.contains(partition, broker))
}

/// Validates a whole map.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), String> {
    configs.iter().try_for_each(|(k, v)| validate_entry(k, v))?;
    compaction::check(configs)
}

/// The effective value of every key for a topic, with whether it is the default.
pub fn effective(
    configs: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Vec<(&'static str, String, bool)> {
    let d = broker.log_defaults();
    TOPIC_KEYS
        .iter()
        .map(|k| {
            if let Some(v) = configs.get(k.name) {
                return (k.name, v.clone(), false);
            }
            let v = match k.name {
                "cleanup.policy" => "delete".to_string(),
                "retention.ms" => d.retention_ms.to_string(),
                "retention.bytes" => d.retention_bytes.to_string(),
                "segment.bytes" => d.segment_bytes.to_string(),
                "segment.ms" => d.segment_ms.to_string(),
                "flush.messages" => d.flush_messages.min(i64::MAX as u64).to_string(),
                "flush.ms" => d.flush_ms.to_string(),
                "index.interval.bytes" => d.index_interval_bytes.to_string(),
                "max.message.bytes" => d.max_message_bytes.to_string(),
                "message.timestamp.type" => "CreateTime".to_string(),
                "min.insync.replicas" => "1".to_string(),
                "unclean.leader.election.enable" => "false".to_string(),
                "compression.type" => "producer".to_string(),
                "remote.storage.enable" => broker.tier_enable_by_default.to_string(),
                "local.retention.ms" => broker.tier_local_retention_ms.to_string(),
                "local.retention.bytes" => "-2".to_string(),
                "leader.replication.throttled.replicas"
                | "follower.replication.throttled.replicas" => String::new(),
                k => compaction::default_value(k).unwrap_or_default(),
            };
            (k.name, v, true)
        })
        .collect()
}

/// Whether a topic's closed segments go to the tier.
pub fn remote_storage_enabled(configs: &BTreeMap<String, String>, broker: &BrokerConfig) -> bool {
    // Compacted topics are never tiered (refused when asked for explicitly).
    !compaction::is_compacted(configs)
        && configs
            .get("remote.storage.enable")
            .map_or(broker.tier_enable_by_default, |v| v == "true")
}

/// Resolves a topic's log settings over the broker defaults. Values were validated
/// when they were set; anything unparsable falls back to the default.
pub fn log_config(configs: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
    let mut c = broker.log_defaults();
    let long = |k: &str| configs.get(k).and_then(|v| v.parse::<i64>().ok());
    if let Some(v) = long("retention.ms") {
        c.retention_ms = v;
    }
    if let Some(v) = long("retention.bytes") {
        c.retention_bytes = v;
    }
    if let Some(v) = long("segment.bytes") {
        c.segment_bytes = (v.max(1024) as u64).min(crate::log::MAX_SEGMENT_BYTES);
    }
    if let Some(v) = long("segment.ms") {
        c.segment_ms = v.max(1);
    }
    if let Some(v) = long("flush.messages") {
        c.flush_messages = v.max(1) as u64;
    }
    if let Some(v) = long("flush.ms") {
        c.flush_ms = v.max(0);
    }
    if let Some(v) = long("index.interval.bytes") {
        c.index_interval_bytes = v.max(0) as u64;
    }
    if let Some(v) = long("max.message.bytes") {
        c.max_message_bytes = v.max(0) as usize;
    }
    c.log_append_time =
        configs.get("message.timestamp.type").map(String::as_str) == Some("LogAppendTime");
    c.compaction = compaction::compaction_config(configs);
    if !compaction::deletes(configs) {
        // `compact` alone: only the cleaner removes records.
        c.retention_ms = -1;
        c.retention_bytes = -1;
    }
    if broker.tier_configured() && remote_storage_enabled(configs, broker) {
        c.remote = Some(crate::log::retention::LocalRetention {
            local_retention_ms: long("local.retention.ms")
                .unwrap_or(broker.tier_local_retention_ms),
            local_retention_bytes: long("local.retention.bytes").unwrap_or(-2),
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_replica_lists_parse_as_kafka_writes_them() {
        assert_eq!(parse_replica_list(" * "), Ok(ReplicaList::All));
        assert_eq!(parse_replica_list(""), Ok(ReplicaList::Some(vec![])));
        let l = parse_replica_list("0:1, 0:2,3:1").unwrap();
        assert!(l.contains(0, 2) && l.contains(3, 1) && !l.contains(1, 1));
        for bad in ["0", "a:1", "0:-1", "1:2:3"] {
            assert!(validate_entry("follower.replication.throttled.replicas", bad).is_err());
        }
        let configs = BTreeMap::from([(
            "leader.replication.throttled.replicas".to_string(),
            "2:0".to_string(),
        )]);
        assert!(lists_replica(
            &configs,
            "leader.replication.throttled.replicas",
            2,
            0
        ));
        assert!(!lists_replica(
            &configs,
            "follower.replication.throttled.replicas",
            2,
            0
        ));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate_entry("retention.ms", "1000").is_ok());
        assert!(validate_entry("retention.ms", "-2")
            .unwrap_err()
            .contains(">= -1"));
        assert!(validate_entry("segment.bytes", "abc")
            .unwrap_err()
            .contains("integer"));
        // Positions in a segment are 32-bit in the index.
        assert!(validate_entry("segment.bytes", "2147483647").is_ok());
        assert!(validate_entry("segment.bytes", "4294967296")
            .unwrap_err()
            .contains("<= 2147483647"));
        assert!(validate_entry("bogus.key", "1")
            .unwrap_err()
            .contains("unknown"));
        assert!(validate_entry("cleanup.policy", "compact").is_ok());
        assert!(validate_entry("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_entry("cleanup.policy", "bogus").is_err());
        assert!(validate_entry("min.cleanable.dirty.ratio", "0.1").is_ok());
        assert!(validate_entry("min.cleanable.dirty.ratio", "1.5").is_err());
    }

    #[test]
    fn topic_values_override_broker_defaults() {
        let b = BrokerConfig::default();
        let mut m = BTreeMap::new();
        m.insert("segment.bytes".to_string(), "4096".to_string());
        m.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let c = log_config(&m, &b);
        assert_eq!(c.segment_bytes, 4096);
        assert!(c.log_append_time);
        assert_eq!(c.retention_ms, b.log_retention_ms);
        let eff = effective(&m, &b);
        assert!(eff
            .iter()
            .any(|(k, v, d)| *k == "segment.bytes" && v == "4096" && !d));
    }
}
