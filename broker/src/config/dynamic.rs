//! Dynamic broker configs: the Kafka broker keys a running broker applies without a
//! restart, set for one broker (`kafka-configs --entity-type brokers --entity-name 1`)
//! or for every broker (`--entity-default`) through (Incremental)AlterConfigs and kept
//! in the metadata quorum. A broker's live settings are its static ones
//! ([`BrokerConfig`], flags and environment) overlaid with the cluster-wide dynamic
//! defaults and then with its own dynamic values, Kafka's order of precedence.
//!
//! The topic defaults (`log.*`, `message.max.bytes`) reach every partition that does
//! not override them on the next metadata apply; the cleaner throttle is read by the
//! cleaner's next pass.

use std::collections::BTreeMap;

use super::BrokerConfig;

/// The quorum's name for the cluster-wide defaults (Kafka's empty broker name).
pub const CLUSTER_DEFAULT: &str = "";

/// One broker key that can change at run time.
pub struct DynamicKey {
    pub kafka: &'static str,
    /// Parses `value` into `config`, or says why it is not acceptable.
    apply: fn(&mut BrokerConfig, &str) -> Result<(), String>,
}

fn long(value: &str, min: i64, max: i64) -> Result<i64, String> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not an integer"))?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside {min}..={max}"))
    }
}

macro_rules! dynamic {
    ($kafka:literal, $field:ident, $min:expr, $max:expr) => {
        DynamicKey {
            kafka: $kafka,
            apply: |c, v| {
                c.$field = long(v, $min, $max)? as _;
                Ok(())
            },
        }
    };
}

/// Every dynamic broker key.
pub const DYNAMIC_KEYS: &[DynamicKey] = &[
    dynamic!(
        "log.segment.bytes",
        log_segment_bytes,
        1024,
        i32::MAX as i64
    ),
    dynamic!("log.roll.ms", log_segment_ms, 1, i64::MAX),
    dynamic!("log.retention.ms", log_retention_ms, -1, i64::MAX),
    dynamic!("log.retention.bytes", log_retention_bytes, -1, i64::MAX),
    dynamic!(
        "log.flush.interval.messages",
        log_flush_messages,
        1,
        i64::MAX
    ),
    dynamic!("log.flush.interval.ms", log_flush_ms, 0, i64::MAX),
    dynamic!(
        "log.index.interval.bytes",
        log_index_interval_bytes,
        0,
        i32::MAX as i64
    ),
    dynamic!(
        "message.max.bytes",
        log_max_message_bytes,
        0,
        i32::MAX as i64
    ),
    DynamicKey {
        // A double in Kafka, whose default (Double.MAX_VALUE) means unlimited; 0 or
        // anything past u64 is unlimited here.
        kafka: "log.cleaner.io.max.bytes.per.second",
        apply: |c, v| {
            let rate: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{v}` is not a number"))?;
            if rate.is_nan() || rate < 0.0 {
                return Err(format!("{v} must be >= 0"));
            }
            c.log_cleaner_io_max_bytes_per_second = if rate >= u64::MAX as f64 {
                0
            } else {
                rate as u64
            };
            Ok(())
        },
    },
    dynamic!(
        "leader.replication.throttled.rate",
        leader_replication_throttled_rate,
        1,
        i64::MAX
    ),
    dynamic!(
        "follower.replication.throttled.rate",
        follower_replication_throttled_rate,
        1,
        i64::MAX
    ),
];

/// The dynamic key named `kafka`, if it is one.
pub fn key(kafka: &str) -> Option<&'static DynamicKey> {
    DYNAMIC_KEYS.iter().find(|k| k.kafka == kafka)
}

/// Checks a whole set of dynamic values: every key dynamic, every value acceptable.
/// The error names each offending key; `static_reason` explains a key that exists
/// but is read at startup.
pub fn validate(
    configs: &BTreeMap<String, String>,
    static_reason: impl Fn(&str) -> String,
) -> Result<(), String> {
    let mut scratch = BrokerConfig::default();
    let problems: Vec<String> = configs
        .iter()
        .filter_map(|(k, v)| match key(k) {
            None => Some(static_reason(k)),
            Some(d) => (d.apply)(&mut scratch, v)
                .err()
                .map(|e| format!("invalid value for {k}: {e}")),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Whether `entity` names the cluster default or a broker id.
pub fn valid_entity(entity: &str) -> bool {
    entity == CLUSTER_DEFAULT || entity.parse::<u32>().is_ok()
}

/// Where a broker key's live value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This broker's own dynamic value.
    Broker,
    /// The cluster-wide dynamic default.
    ClusterDefault,
    /// Static: the broker's settings or the built-in default.
    Static,
}

/// The dynamic values that apply to one broker: the cluster defaults and its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicValues {
    pub cluster: BTreeMap<String, String>,
    pub broker: BTreeMap<String, String>,
}

impl DynamicValues {
    /// The values of broker `node_id` in the quorum's map (entity → key → value).
    pub fn of(all: &BTreeMap<String, BTreeMap<String, String>>, node_id: i32) -> Self {
        DynamicValues {
            cluster: all.get(CLUSTER_DEFAULT).cloned().unwrap_or_default(),
            broker: all.get(&node_id.to_string()).cloned().unwrap_or_default(),
        }
    }

    /// The live settings: `base` overlaid with the cluster defaults, then with this
    /// broker's values. A value that no longer parses (it was validated when set)
    /// is skipped with the lower layer kept.
    pub fn overlay(&self, base: &BrokerConfig) -> BrokerConfig {
        let mut live = base.clone();
        for layer in [&self.cluster, &self.broker] {
            for (k, v) in layer {
                if let Some(d) = key(k) {
                    let mut next = live.clone();
                    if (d.apply)(&mut next, v).is_ok() {
                        live = next;
                    }
                }
            }
        }
        live
    }

    /// Which layer sets `kafka` for this broker.
    pub fn source(&self, kafka: &str) -> Source {
        if self.broker.contains_key(kafka) {
            Source::Broker
        } else if self.cluster.contains_key(kafka) {
            Source::ClusterDefault
        } else {
            Source::Static
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_brokers_own_value_wins_over_the_cluster_default_which_wins_over_static() {
        let base = BrokerConfig {
            log_retention_ms: 1000,
            log_segment_bytes: 4096,
            ..BrokerConfig::default()
        };
        let mut all = BTreeMap::new();
        all.insert(
            CLUSTER_DEFAULT.to_string(),
            map(&[("log.retention.ms", "2000"), ("log.retention.bytes", "77")]),
        );
        all.insert("3".to_string(), map(&[("log.retention.ms", "3000")]));
        let mine = DynamicValues::of(&all, 3);
        let live = mine.overlay(&base);
        assert_eq!(live.log_retention_ms, 3000);
        assert_eq!(live.log_retention_bytes, 77);
        assert_eq!(live.log_segment_bytes, 4096);
        assert_eq!(mine.source("log.retention.ms"), Source::Broker);
        assert_eq!(mine.source("log.retention.bytes"), Source::ClusterDefault);
        assert_eq!(mine.source("log.segment.bytes"), Source::Static);
        // Another broker sees only the defaults.
        let other = DynamicValues::of(&all, 1).overlay(&base);
        assert_eq!(other.log_retention_ms, 2000);
    }

    #[test]
    fn validation_names_static_keys_and_bad_values() {
        let why = validate(
            &map(&[
                ("log.retention.ms", "-2"),
                ("num.partitions", "3"),
                ("log.segment.bytes", "x"),
            ]),
            |k| format!("{k} is static"),
        )
        .unwrap_err();
        assert!(why.contains("invalid value for log.retention.ms"), "{why}");
        assert!(why.contains("num.partitions is static"), "{why}");
        assert!(why.contains("log.segment.bytes: `x`"), "{why}");
        assert!(validate(&map(&[("log.retention.ms", "-1")]), |k| k.into()).is_ok());
    }

    #[test]
    fn the_cleaner_rate_takes_kafkas_double_and_its_unlimited_default() {
        let mut c = BrokerConfig::default();
        (key("log.cleaner.io.max.bytes.per.second").unwrap().apply)(&mut c, "1.5E7").unwrap();
        assert_eq!(c.log_cleaner_io_max_bytes_per_second, 15_000_000);
        (key("log.cleaner.io.max.bytes.per.second").unwrap().apply)(
            &mut c,
            "1.7976931348623157E308",
        )
        .unwrap();
        assert_eq!(c.log_cleaner_io_max_bytes_per_second, 0);
        assert!(validate(
            &map(&[("log.cleaner.io.max.bytes.per.second", "-1")]),
            |k| k.into()
        )
        .is_err());
        assert!(valid_entity("") && valid_entity("2") && !valid_entity("x"));
    }
}
