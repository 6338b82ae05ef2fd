//! The compaction keys of a topic's config: `cleanup.policy` with `compact`,
//! `delete.retention.ms`, `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`,
//! `max.compaction.lag.ms`; how they resolve into the cleaner's settings and which
//! combinations are refused (remote storage on a compacted topic, as Kafka does).

use std::collections::BTreeMap;

use crate::log::cleaner::CompactionConfig;

/// Whether `cleanup.policy` includes `compact`.
pub fn is_compacted(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get("cleanup.policy")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"))
}

/// Whether `cleanup.policy` includes `delete` (the default).
pub fn deletes(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get("cleanup.policy")
        .is_none_or(|v| v.split(',').any(|p| p.trim() == "delete"))
}

/// The cleaner's settings of a compacted topic.
pub fn compaction_config(configs: &BTreeMap<String, String>) -> Option<CompactionConfig> {
    if !is_compacted(configs) {
        return None;
    }
    let d = CompactionConfig::default();
    let long = |k: &str, default: i64| {
        configs
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(default)
    };
    let ratio = configs
        .get("min.cleanable.dirty.ratio")
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(d.min_cleanable_dirty_ratio_ppm, |r| {
            (r.clamp(0.0, 1.0) * 1e6).round() as u32
        });
    Some(CompactionConfig {
        delete_retention_ms: long("delete.retention.ms", d.delete_retention_ms).max(0),
        min_cleanable_dirty_ratio_ppm: ratio,
        min_compaction_lag_ms: long("min.compaction.lag.ms", d.min_compaction_lag_ms).max(0),
        max_compaction_lag_ms: long("max.compaction.lag.ms", d.max_compaction_lag_ms).max(1),
    })
}

/// The default of a compaction key, for DescribeConfigs.
pub fn default_value(key: &str) -> Option<String> {
    let d = CompactionConfig::default();
    Some(match key {
        "delete.retention.ms" => d.delete_retention_ms.to_string(),
        "min.cleanable.dirty.ratio" => "0.5".to_string(),
        "min.compaction.lag.ms" => d.min_compaction_lag_ms.to_string(),
        "max.compaction.lag.ms" => d.max_compaction_lag_ms.to_string(),
        _ => return None,
    })
}

/// Checks across keys; the error is a client-facing message.
pub fn check(configs: &BTreeMap<String, String>) -> Result<(), String> {
    if is_compacted(configs)
        && configs.get("remote.storage.enable").map(String::as_str) == Some("true")
    {
        return Err(
            "remote storage is not supported on compacted topics: `remote.storage.enable=true` \
             cannot be combined with `cleanup.policy` `compact` (see docs/tiered-storage.md)"
                .to_string(),
        );
    }
    let long = |k: &str| configs.get(k).and_then(|v| v.parse::<i64>().ok());
    if let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms")) {
        if min > max {
            return Err(format!(
                "`min.compaction.lag.ms` ({min}) must not exceed `max.compaction.lag.ms` ({max})"
            ));
        }
    }
    Ok(())
}

/// Checks a config change of an existing topic: a tiered topic (explicitly or by the
/// broker default) cannot become compacted, its remote segments could not be cleaned.
pub fn check_change(
    current: &BTreeMap<String, String>,
    next: &BTreeMap<String, String>,
    broker: &crate::config::BrokerConfig,
) -> Result<(), String> {
    if is_compacted(next)
        && !is_compacted(current)
        && broker.tier_configured()
        && super::remote_storage_enabled(current, broker)
    {
        return Err(
            "remote storage is not supported on compacted topics: this topic is tiered \
             (`remote.storage.enable`), so `cleanup.policy` cannot include `compact` \
             (see docs/tiered-storage.md)"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn compact_policies_resolve_to_cleaner_settings() {
        assert!(compaction_config(&m(&[])).is_none());
        assert!(compaction_config(&m(&[("cleanup.policy", "delete")])).is_none());
        let c = compaction_config(&m(&[
            ("cleanup.policy", "compact,delete"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
        ]))
        .unwrap();
        assert_eq!(c.min_cleanable_dirty_ratio_ppm, 10_000);
        assert_eq!(c.delete_retention_ms, 100);
        assert!(deletes(&m(&[("cleanup.policy", "compact,delete")])));
        assert!(!deletes(&m(&[("cleanup.policy", "compact")])));
        assert!(deletes(&m(&[])));
    }

    #[test]
    fn compact_alone_turns_retention_off_and_tiering_off() {
        let broker = crate::config::BrokerConfig {
            tier_enable_by_default: true,
            tier_dir: "/tmp/tier".into(),
            ..crate::config::BrokerConfig::default()
        };
        let c = super::super::log_config(&m(&[("cleanup.policy", "compact")]), &broker);
        assert_eq!((c.retention_ms, c.retention_bytes), (-1, -1));
        assert!(c.compaction.is_some() && c.remote.is_none());
        let both = super::super::log_config(&m(&[("cleanup.policy", "compact,delete")]), &broker);
        assert_eq!(both.retention_ms, broker.log_retention_ms);
        let plain = super::super::log_config(&m(&[]), &broker);
        assert!(plain.compaction.is_none() && plain.remote.is_some());
    }

    #[test]
    fn remote_storage_on_a_compacted_topic_is_refused() {
        let e = check(&m(&[
            ("cleanup.policy", "compact"),
            ("remote.storage.enable", "true"),
        ]))
        .unwrap_err();
        assert!(e.contains("not supported on compacted topics"), "{e}");
        assert!(check(&m(&[
            ("cleanup.policy", "compact"),
            ("remote.storage.enable", "false")
        ]))
        .is_ok());
        assert!(check(&m(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5")
        ]))
        .is_err());
    }
}
