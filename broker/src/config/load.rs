//! Reading the configuration: the embedded defaults (or a base) under a TOML file,
//! under `STRATA_<KEY>` environment variables, then the range checks, each failure
//! naming its key.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BrokerConfig, ConfigError};

impl BrokerConfig {
    /// Loads a TOML file (or starts from `base` when `path` is None) and applies
    /// `STRATA_*` overrides from `env`.
    pub fn load(
        base: BrokerConfig,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::Table::try_from(&base).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            let file: toml::Table = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse(format!("{}: {e}", p.display())))?;
            for (k, v) in file {
                if !table.contains_key(&k) && !OPTIONAL_KEYS.contains(&k.as_str()) {
                    return Err(ConfigError::Parse(format!(
                        "{}: unknown key `{k}`",
                        p.display()
                    )));
                }
                table.insert(k, v);
            }
        }
        let keys: BTreeMap<String, &'static str> = ALL_KEYS
            .iter()
            .map(|k| (format!("STRATA_{}", k.to_uppercase()), *k))
            .collect();
        for (name, value) in env {
            if let Some(key) = keys.get(&name) {
                table.insert((*key).to_string(), env_value(&value));
            }
        }
        let cfg: BrokerConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, key: &'static str, reason: &str) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    reason: reason.into(),
                })
            }
        }
        check(self.node_id >= 0, "node_id", "must be >= 0")?;
        self.voters()?;
        check(
            self.broker_session_timeout_ms > 2 * self.broker_heartbeat_interval_ms as i64,
            "broker_session_timeout_ms",
            "must be more than twice broker_heartbeat_interval_ms",
        )?;
        check(
            self.offsets_topic_replication_factor >= 1,
            "offsets_topic_replication_factor",
            "must be >= 1",
        )?;
        check(
            self.transaction_state_partitions >= 1,
            "transaction_state_partitions",
            "must be >= 1",
        )?;
        check(
            self.transaction_max_timeout_ms >= 1,
            "transaction_max_timeout_ms",
            "must be >= 1",
        )?;
        check(
            self.default_partitions >= 1,
            "default_partitions",
            "must be >= 1",
        )?;
        check(
            self.default_replication_factor >= 1,
            "default_replication_factor",
            "must be >= 1",
        )?;
        check(
            self.max_request_bytes >= 1024,
            "max_request_bytes",
            "must be >= 1024",
        )?;
        check(self.max_connections >= 1, "max_connections", "must be >= 1")?;
        check(
            (1024..=u32::MAX as usize).contains(&self.queued_max_request_bytes),
            "queued_max_request_bytes",
            "must be between 1024 and 4294967295",
        )?;
        check(
            self.producer_id_expiration_ms >= 1,
            "producer_id_expiration_ms",
            "must be >= 1",
        )?;
        check(
            self.log_segment_bytes >= 1024,
            "log_segment_bytes",
            "must be >= 1024",
        )?;
        check(
            self.log_segment_bytes <= i32::MAX as u64,
            "log_segment_bytes",
            "must fit in 31 bits",
        )?;
        check(self.log_segment_ms >= 1, "log_segment_ms", "must be >= 1")?;
        check(
            self.log_retention_bytes >= -1,
            "log_retention_bytes",
            "must be >= -1",
        )?;
        check(
            self.log_retention_ms >= -1,
            "log_retention_ms",
            "must be >= -1",
        )?;
        check(self.log_flush_ms >= 0, "log_flush_ms", "must be >= 0")?;
        check(
            self.log_cleaner_backoff_ms >= 10,
            "log_cleaner_backoff_ms",
            "must be >= 10",
        )?;
        check(
            self.retention_check_interval_ms >= 10,
            "retention_check_interval_ms",
            "must be >= 10",
        )?;
        check(
            self.log_format == "text" || self.log_format == "json",
            "log_format",
            "must be \"text\" or \"json\"",
        )?;
        check(
            (64 << 10..=1 << 30).contains(&self.tier_cache_chunk_bytes),
            "tier_cache_chunk_bytes",
            "must be between 64 KiB and 1 GiB",
        )?;
        check(
            self.tier_read_ahead_chunks <= 64,
            "tier_read_ahead_chunks",
            "must be <= 64",
        )?;
        check(
            (1..=64).contains(&self.tier_upload_concurrency),
            "tier_upload_concurrency",
            "must be between 1 and 64",
        )?;
        check(
            self.tier_orphan_sweep_interval_ms >= 1000,
            "tier_orphan_sweep_interval_ms",
            "must be >= 1000",
        )?;
        check(
            self.tier_orphan_grace_ms >= 60_000,
            "tier_orphan_grace_ms",
            "must be >= 60000 (an upload must have time to commit)",
        )?;
        crate::security::SecuritySettings::from_config(self)?;
        crate::security::authorizer::settings(self)?;
        check(
            !self.cluster_id.is_empty(),
            "cluster_id",
            "must not be empty",
        )?;
        Ok(())
    }
}

/// Keys that may be absent from the serialized defaults (None values).
const OPTIONAL_KEYS: &[&str] = &["advertised_host", "advertised_port", "rack"];

const ALL_KEYS: &[&str] = &[
    "node_id",
    "cluster_id",
    "data_dir",
    "kafka_listen",
    "advertised_host",
    "advertised_port",
    "metrics_listen",
    "admin_listen",
    "rack",
    "auto_create_topics",
    "default_partitions",
    "default_replication_factor",
    "max_request_bytes",
    "max_connections",
    "queued_max_request_bytes",
    "retention_check_interval_ms",
    "log_segment_bytes",
    "log_segment_ms",
    "log_retention_bytes",
    "log_retention_ms",
    "log_flush_messages",
    "log_flush_ms",
    "log_index_interval_bytes",
    "log_max_message_bytes",
    "log_format",
    "listeners",
    "advertised_listeners",
    "listener_security_protocol_map",
    "inter_broker_listener_name",
    "ssl_certificate_location",
    "ssl_key_location",
    "ssl_ca_location",
    "ssl_client_auth",
    "admin_ssl_certificate_location",
    "admin_ssl_key_location",
    "admin_ssl_ca_location",
    "admin_ssl_client_auth",
    "admin_ssl_peer_name",
    "admin_ssl_accept_plaintext",
    "admin_ssl_connect_plaintext",
    "admin_token_file",
    "admin_token_principal",
    "ssl_principal_mapping_rules",
    "sasl_enabled_mechanisms",
    "sasl_server_max_receive_size",
    "connections_max_reauth_ms",
    "sasl_oauthbearer_jwks_endpoint_url",
    "sasl_oauthbearer_jwks_endpoint_ca_location",
    "sasl_oauthbearer_jwks_endpoint_refresh_ms",
    "sasl_oauthbearer_expected_issuer",
    "sasl_oauthbearer_expected_audience",
    "sasl_oauthbearer_sub_claim_name",
    "sasl_oauthbearer_clock_skew_seconds",
    "authorizer_class_name",
    "super_users",
    "allow_everyone_if_no_acl_found",
    "offsets_topic_partitions",
    "offsets_segment_bytes",
    "transaction_state_partitions",
    "transaction_max_timeout_ms",
    "transactional_id_expiration_ms",
    "offsets_retention_ms",
    "offset_metadata_max_bytes",
    "producer_id_expiration_ms",
    "group_initial_rebalance_delay_ms",
    "group_min_session_timeout_ms",
    "group_max_session_timeout_ms",
    "tier_bucket",
    "tier_endpoint",
    "tier_region",
    "tier_prefix",
    "tier_dir",
    "tier_upload_interval_ms",
    "tier_enable_by_default",
    "tier_local_retention_ms",
    "tier_access_key_id",
    "tier_secret_access_key",
    "controller_voters",
    "controller_election_timeout_ms",
    "broker_heartbeat_interval_ms",
    "broker_session_timeout_ms",
    "replica_lag_time_max_ms",
    "auto_leader_rebalance_enable",
    "leader_imbalance_check_interval_seconds",
    "replica_fetch_max_wait_ms",
    "replica_fetch_max_bytes",
    "offsets_topic_replication_factor",
    "tier_cache_bytes",
    "tier_cache_chunk_bytes",
    "tier_read_ahead_chunks",
    "tier_cache_dir",
    "tier_upload_concurrency",
    "tier_orphan_sweep_interval_ms",
    "tier_orphan_grace_ms",
    "log_cleaner_enable",
    "log_cleaner_io_max_bytes_per_second",
    "log_cleaner_backoff_ms",
    "leader_replication_throttled_rate",
    "follower_replication_throttled_rate",
];

/// Environment values are typed the way TOML would read them: integers and booleans
/// become numbers and booleans, anything else a string.
fn env_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.toml");
        std::fs::write(
            &p,
            "node_id = 3\nkafka_listen = \"127.0.0.2:9092\"\nrack = \"a\"\n",
        )
        .unwrap();
        let env = vec![
            ("STRATA_NODE_ID".to_string(), "7".to_string()),
            ("STRATA_ADVERTISED_HOST".to_string(), "10.1.2.3".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = BrokerConfig::load(BrokerConfig::default(), Some(&p), env).unwrap();
        assert_eq!(c.node_id, 7);
        assert_eq!(c.rack.as_deref(), Some("a"));
        assert_eq!(c.advertised(), ("10.1.2.3".to_string(), 9092));
    }

    #[test]
    fn bad_config_is_reported_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.toml");
        std::fs::write(&p, "nod_id = 3\n").unwrap();
        let e = BrokerConfig::load(BrokerConfig::default(), Some(&p), vec![]).unwrap_err();
        assert!(e.to_string().contains("nod_id"), "{e}");
        let env = vec![("STRATA_DEFAULT_PARTITIONS".to_string(), "0".to_string())];
        let e = BrokerConfig::load(BrokerConfig::default(), None, env).unwrap_err();
        assert!(e.to_string().contains("default_partitions"), "{e}");
        let env = vec![("STRATA_KAFKA_LISTEN".to_string(), "nonsense".to_string())];
        assert!(BrokerConfig::load(BrokerConfig::default(), None, env).is_err());
    }
}
