//! Broker configuration: a flat TOML file (`strata-broker serve --config FILE`) with
//! every key overridable by an environment variable `STRATA_<KEY>` (upper case), and
//! embedded defaults for `strata-broker dev`. Every key is documented in
//! docs/configuration.md.
//!
//! The settings, their defaults and what derives from them are here; reading them
//! (file, environment, range checks) is in `load`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::log::LogConfig;

pub mod dynamic;
mod load;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// All broker settings. Field names are the config keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id (Kafka `node.id`).
    pub node_id: i32,
    /// Cluster id reported to clients.
    pub cluster_id: String,
    /// Where partition logs and metadata live.
    pub data_dir: PathBuf,
    /// Kafka protocol listener.
    pub kafka_listen: SocketAddr,
    /// Host advertised to clients in Metadata (defaults to the listen address).
    pub advertised_host: Option<String>,
    /// Port advertised to clients (defaults to the listen port).
    pub advertised_port: Option<u16>,
    /// HTTP listener for /metrics, /healthz and /readyz.
    pub metrics_listen: SocketAddr,
    /// gRPC admin API listener (operator, `strata` CLI).
    pub admin_listen: SocketAddr,
    /// Rack reported in Metadata.
    pub rack: Option<String>,
    /// Create unknown topics on Metadata/Produce requests that allow it.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1.
    pub default_partitions: i32,
    /// Replication factor of auto-created topics and of CreateTopics with -1.
    pub default_replication_factor: i16,
    /// Largest request frame accepted; larger frames close the connection.
    pub max_request_bytes: usize,
    /// Connections above this are refused.
    pub max_connections: usize,
    /// Bytes of request frames held in memory at once, over all connections: a
    /// connection waits for room before reading a frame's body (back-pressure), and a
    /// frame larger than the whole budget closes its connection.
    pub queued_max_request_bytes: usize,
    /// How often retention runs (ms).
    pub retention_check_interval_ms: u64,
    /// Default `segment.bytes`.
    pub log_segment_bytes: u64,
    /// Default `segment.ms`.
    pub log_segment_ms: i64,
    /// Default `retention.bytes` (-1: unlimited).
    pub log_retention_bytes: i64,
    /// Default `retention.ms` (-1: unlimited).
    pub log_retention_ms: i64,
    /// Default `flush.messages` (0: leave flushing to the OS).
    pub log_flush_messages: u64,
    /// Default `flush.ms` (0: never flush on a timer).
    pub log_flush_ms: i64,
    /// Default `index.interval.bytes`.
    pub log_index_interval_bytes: u64,
    /// Default `max.message.bytes`.
    pub log_max_message_bytes: usize,
    /// Log output: "text" or "json".
    pub log_format: String,
    /// Named Kafka listeners, `NAME://host:port` comma-separated (Kafka's
    /// `listeners`); empty: one PLAINTEXT listener on `kafka_listen`. See
    /// docs/security.md.
    pub listeners: String,
    /// What each listener tells clients to connect to, `NAME://host:port`
    /// comma-separated (Kafka's `advertised.listeners`); a listener not listed
    /// advertises `advertised_host` (or its bind address) and its port.
    pub advertised_listeners: String,
    /// `NAME:PROTOCOL` comma-separated, PROTOCOL one of PLAINTEXT, SSL,
    /// SASL_PLAINTEXT, SASL_SSL (Kafka's `listener.security.protocol.map`); a
    /// listener named after a protocol needs no entry.
    pub listener_security_protocol_map: String,
    /// The listener other brokers reach this one on for Kafka requests (transaction
    /// markers); must be PLAINTEXT. Empty: the first listener.
    pub inter_broker_listener_name: String,
    /// PEM file with the certificate chain of the TLS listeners (leaf first).
    pub ssl_certificate_location: String,
    /// PEM file with the private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub ssl_key_location: String,
    /// PEM file with the CAs that client certificates must chain to ("": no client
    /// certificates are asked for).
    pub ssl_ca_location: String,
    /// Client certificates on SSL listeners: "none", "requested" or "required"
    /// (Kafka's `ssl.client.auth`).
    pub ssl_client_auth: String,
    /// How a client certificate's subject (RFC 2253) becomes a principal name:
    /// Kafka's `ssl.principal.mapping.rules` (`RULE:pattern/replacement/[LU]`, ...,
    /// `DEFAULT`).
    pub ssl_principal_mapping_rules: String,
    /// PEM certificate chain of the admin/internal gRPC listener ("": plaintext).
    /// With the key and the CA below, that listener speaks TLS, and this broker
    /// presents the same certificate to the brokers it calls (mutual TLS between
    /// brokers; see `security::admin`).
    pub admin_ssl_certificate_location: String,
    /// PEM private key of `admin_ssl_certificate_location`.
    pub admin_ssl_key_location: String,
    /// PEM CAs that certificates on the admin listener chain to: clients' and other
    /// brokers' certificates are verified against it, both ways.
    pub admin_ssl_ca_location: String,
    /// Client certificates on the admin listener: "required" (every client presents
    /// one) or "requested" (a client without one authenticates with the token).
    pub admin_ssl_client_auth: String,
    /// The DNS name every broker's admin certificate carries ("": the host of the
    /// address dialled). Brokers dial each other by address (a pod IP), which a
    /// certificate shared by all brokers cannot name; with this set, the broker's
    /// client side verifies the peer's certificate against this name instead.
    pub admin_ssl_peer_name: String,
    /// With admin TLS on, also accept connections that do not start a TLS
    /// handshake (told apart by their first byte); those authenticate with the
    /// token only. For switching a running cluster to TLS one broker at a time.
    pub admin_ssl_accept_plaintext: bool,
    /// With admin TLS on, still call other brokers without TLS (they must accept
    /// plaintext): the first step of such a switch, see `docs/security.md`.
    pub admin_ssl_connect_plaintext: bool,
    /// File holding the admin API's bearer token ("": none). A call without a
    /// verified client certificate must then carry `authorization: Bearer <token>`;
    /// brokers send it to each other too.
    pub admin_token_file: String,
    /// The principal a caller authenticated by the token acts as (ACLs).
    pub admin_token_principal: String,
    /// SASL mechanisms offered on SASL listeners, comma-separated (PLAIN,
    /// SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_enabled_mechanisms: String,
    /// Largest request accepted from a client before it has authenticated on a
    /// SASL listener (Kafka's `sasl.server.max.receive.size`).
    pub sasl_server_max_receive_size: usize,
    /// A SASL session lasts this long; the client must re-authenticate before
    /// (KIP-368) or its connection is closed at its next request. 0: forever.
    pub connections_max_reauth_ms: i64,
    /// OAUTHBEARER: the JWKS whose keys sign the tokens, a file (`file:///path`
    /// or a path) or an `http://` or `https://` URL (Kafka's
    /// `sasl.oauthbearer.jwks.endpoint.url`).
    pub sasl_oauthbearer_jwks_endpoint_url: String,
    /// PEM CAs that an `https://` JWKS endpoint's certificate is verified against
    /// ("": the system's trusted roots).
    pub sasl_oauthbearer_jwks_endpoint_ca_location: String,
    /// How often the JWKS is read again (it is also read when a token names a
    /// key it does not hold, at most once a second).
    pub sasl_oauthbearer_jwks_endpoint_refresh_ms: u64,
    /// The `iss` a token must carry ("": not checked).
    pub sasl_oauthbearer_expected_issuer: String,
    /// Audiences, comma-separated, one of which a token's `aud` must name ("": not checked).
    pub sasl_oauthbearer_expected_audience: String,
    /// The claim that names the principal (`User:<value>`).
    pub sasl_oauthbearer_sub_claim_name: String,
    /// Clock difference tolerated for `exp`, `nbf` and `iat`.
    pub sasl_oauthbearer_clock_skew_seconds: u64,
    /// The authorizer (Kafka's `authorizer.class.name`): "" for none (every
    /// request allowed), or `acl` (also accepted: Kafka's StandardAuthorizer and
    /// AclAuthorizer class names) to check every request against the ACLs.
    pub authorizer_class_name: String,
    /// Principals allowed everything, `;`-separated (`User:admin;User:broker`).
    pub super_users: String,
    /// Allow a request on a resource no ACL at all exists for (Kafka's
    /// `allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
    /// Partitions of the internal `__consumer_offsets` topic.
    pub offsets_topic_partitions: i32,
    /// Segment size of `__consumer_offsets` (compaction works segment by segment).
    pub offsets_segment_bytes: u64,
    /// Partitions of the internal `__transaction_state` topic (created on the first
    /// transactional producer).
    pub transaction_state_partitions: i32,
    /// Largest `transaction.timeout.ms` a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// A `transactional.id` without a transaction for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// Committed offsets of a group without members expire this long after the commit.
    pub offsets_retention_ms: i64,
    /// Largest metadata string accepted with a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// The idempotence state of a producer id that has not written to a partition for
    /// this long is forgotten (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// How long the first members of an empty group gather before the first rebalance.
    pub group_initial_rebalance_delay_ms: i64,
    /// Smallest session timeout a member may ask for.
    pub group_min_session_timeout_ms: i64,
    /// Largest session timeout a member may ask for.
    pub group_max_session_timeout_ms: i64,
    /// S3 bucket of the tier; when set, the tier is S3-compatible storage with
    /// credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub tier_bucket: String,
    /// S3 endpoint URL (e.g. `http://127.0.0.1:8333`).
    pub tier_endpoint: String,
    /// S3 region.
    pub tier_region: String,
    /// Key prefix of every object this cluster writes.
    pub tier_prefix: String,
    /// Local directory used as the tier when no bucket is set ("" and no bucket: no tier;
    /// dev mode uses `<data_dir>/tier`).
    pub tier_dir: String,
    /// How often the uploader looks for closed segments (ms).
    pub tier_upload_interval_ms: u64,
    /// Default of the topic config `remote.storage.enable`.
    pub tier_enable_by_default: bool,
    /// Default `local.retention.ms` of tiered topics (-2: same as `retention.ms`).
    pub tier_local_retention_ms: i64,
    /// S3 access key; empty: `AWS_ACCESS_KEY_ID` from the environment.
    pub tier_access_key_id: String,
    /// S3 secret key; empty: `AWS_SECRET_ACCESS_KEY` from the environment.
    pub tier_secret_access_key: String,
    /// Voters of the metadata quorum, `id@host:port` of their admin/internal gRPC
    /// listeners, comma-separated (1, 3 or 5). Empty: this broker alone.
    pub controller_voters: String,
    /// Raft election timeout of the metadata quorum (ms).
    pub controller_election_timeout_ms: u64,
    /// How often a broker heartbeats to the controller (ms).
    pub broker_heartbeat_interval_ms: u64,
    /// A broker silent this long is fenced and loses its leaderships (ms).
    pub broker_session_timeout_ms: i64,
    /// A follower that has not caught up for this long leaves the ISR (ms).
    pub replica_lag_time_max_ms: i64,
    /// The controller gives leadership back to each partition's preferred replica
    /// once it is in sync again (Kafka's `auto.leader.rebalance.enable`); off,
    /// leaders move back only on request (ElectLeaders, `kafka-leader-election`).
    pub auto_leader_rebalance_enable: bool,
    /// How long an imbalance (a partition whose in-sync preferred replica does not
    /// lead) lasts before the controller moves those leaderships back (Kafka's
    /// `leader.imbalance.check.interval.seconds`; 0: at once).
    pub leader_imbalance_check_interval_seconds: u64,
    /// Longest a follower fetch waits for new data at the leader (ms).
    pub replica_fetch_max_wait_ms: i32,
    /// Bytes per follower fetch response.
    pub replica_fetch_max_bytes: i32,
    /// Replication factor of `__consumer_offsets` (capped at the voter count).
    pub offsets_topic_replication_factor: i16,
    /// Disk space of the chunk cache that serves reads from the tier (bytes).
    pub tier_cache_bytes: u64,
    /// Size of one cached chunk, i.e. of one ranged GET (bytes).
    pub tier_cache_chunk_bytes: u64,
    /// Chunks fetched ahead of a reader of the tier (0: no read-ahead).
    pub tier_read_ahead_chunks: u32,
    /// Directory of the chunk cache ("": `<data_dir>/tier-cache`); emptied at start.
    pub tier_cache_dir: String,
    /// Partitions whose closed segments are uploaded at the same time.
    pub tier_upload_concurrency: usize,
    /// How often a partition leader looks for objects under its partition's prefix
    /// that the committed remote log does not list (failed commits, failed deletes).
    pub tier_orphan_sweep_interval_ms: u64,
    /// An unlisted object is deleted only once it is at least this old, so an upload
    /// that is still on its way to the quorum is never mistaken for an orphan (ms).
    pub tier_orphan_grace_ms: i64,
    /// Run the log cleaner for topics with `cleanup.policy` `compact`.
    pub log_cleaner_enable: bool,
    /// Bytes per second the log cleaner reads and writes, over all logs (0: no limit).
    pub log_cleaner_io_max_bytes_per_second: u64,
    /// Pause between cleaner passes over the logs (ms).
    pub log_cleaner_backoff_ms: u64,
    /// Bytes per second this broker serves to followers of throttled replicas
    /// (Kafka's `leader.replication.throttled.rate`; `i64::MAX`: unlimited).
    pub leader_replication_throttled_rate: u64,
    /// Bytes per second this broker fetches for its throttled follower replicas
    /// (Kafka's `follower.replication.throttled.rate`; `i64::MAX`: unlimited).
    pub follower_replication_throttled_rate: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        BrokerConfig {
            node_id: 1,
            cluster_id: "strata-local".into(),
            data_dir: PathBuf::from("./strata-data"),
            kafka_listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            advertised_port: None,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9644)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9093)),
            rack: None,
            auto_create_topics: false,
            default_partitions: 1,
            default_replication_factor: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            queued_max_request_bytes: 256 << 20,
            retention_check_interval_ms: 300_000,
            log_segment_bytes: log.segment_bytes,
            log_segment_ms: log.segment_ms,
            log_retention_bytes: log.retention_bytes,
            log_retention_ms: log.retention_ms,
            log_flush_messages: 0,
            log_flush_ms: 0,
            log_index_interval_bytes: log.index_interval_bytes,
            log_max_message_bytes: log.max_message_bytes,
            log_format: "text".into(),
            listeners: String::new(),
            advertised_listeners: String::new(),
            listener_security_protocol_map: String::new(),
            inter_broker_listener_name: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_ca_location: String::new(),
            ssl_client_auth: "none".into(),
            ssl_principal_mapping_rules: "DEFAULT".into(),
            admin_ssl_certificate_location: String::new(),
            admin_ssl_key_location: String::new(),
            admin_ssl_ca_location: String::new(),
            admin_ssl_client_auth: "required".into(),
            admin_ssl_peer_name: String::new(),
            admin_ssl_accept_plaintext: false,
            admin_ssl_connect_plaintext: false,
            admin_token_file: String::new(),
            admin_token_principal: "User:admin".into(),
            sasl_enabled_mechanisms: "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
            sasl_server_max_receive_size: 512 * 1024,
            connections_max_reauth_ms: 0,
            sasl_oauthbearer_jwks_endpoint_url: String::new(),
            sasl_oauthbearer_jwks_endpoint_ca_location: String::new(),
            sasl_oauthbearer_jwks_endpoint_refresh_ms: 3_600_000,
            sasl_oauthbearer_expected_issuer: String::new(),
            sasl_oauthbearer_expected_audience: String::new(),
            sasl_oauthbearer_sub_claim_name: "sub".into(),
            sasl_oauthbearer_clock_skew_seconds: 30,
            authorizer_class_name: String::new(),
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            offsets_topic_partitions: 50,
            offsets_segment_bytes: 1 << 20,
            transaction_state_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offset_metadata_max_bytes: 4096,
            producer_id_expiration_ms: 86_400_000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            tier_bucket: String::new(),
            tier_endpoint: String::new(),
            tier_region: "us-east-1".into(),
            tier_prefix: String::new(),
            tier_dir: String::new(),
            tier_upload_interval_ms: 30_000,
            tier_enable_by_default: false,
            tier_local_retention_ms: -2,
            tier_access_key_id: String::new(),
            tier_secret_access_key: String::new(),
            controller_voters: String::new(),
            controller_election_timeout_ms: 1000,
            broker_heartbeat_interval_ms: 500,
            broker_session_timeout_ms: 6000,
            replica_lag_time_max_ms: 10_000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            replica_fetch_max_wait_ms: 500,
            replica_fetch_max_bytes: 8 << 20,
            offsets_topic_replication_factor: 3,
            tier_cache_bytes: 256 << 20,
            tier_cache_chunk_bytes: 4 << 20,
            tier_read_ahead_chunks: 4,
            tier_cache_dir: String::new(),
            tier_upload_concurrency: 4,
            tier_orphan_sweep_interval_ms: 600_000,
            tier_orphan_grace_ms: 3_600_000,
            log_cleaner_enable: true,
            log_cleaner_io_max_bytes_per_second: 0,
            log_cleaner_backoff_ms: 15_000,
            leader_replication_throttled_rate: i64::MAX as u64,
            follower_replication_throttled_rate: i64::MAX as u64,
        }
    }
}

impl BrokerConfig {
    /// Embedded defaults of `strata-broker dev`: local data dir, auto-created topics.
    pub fn dev() -> Self {
        BrokerConfig {
            auto_create_topics: true,
            retention_check_interval_ms: 30_000,
            tier_upload_interval_ms: 5_000,
            tier_enable_by_default: true,
            // Small segments, so closed segments (and their upload to the tier) show up
            // after a few MiB of data when trying things out.
            log_segment_bytes: 16 << 20,
            ..BrokerConfig::default()
        }
    }

    /// Broker-wide defaults for partition logs.
    pub fn log_defaults(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_segment_ms,
            retention_bytes: self.log_retention_bytes,
            retention_ms: self.log_retention_ms,
            flush_messages: if self.log_flush_messages == 0 {
                u64::MAX
            } else {
                self.log_flush_messages
            },
            flush_ms: if self.log_flush_ms == 0 {
                i64::MAX
            } else {
                self.log_flush_ms
            },
            index_interval_bytes: self.log_index_interval_bytes,
            max_message_bytes: self.log_max_message_bytes,
            log_append_time: false,
            remote: None,
            compaction: None,
        }
    }

    /// The tier backend these settings describe, if any. Credentials for S3 come from
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` in `env`.
    pub fn tier_backend(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::tier::store::TierBackend>, ConfigError> {
        use crate::tier::store::TierBackend;
        if !self.tier_bucket.is_empty() {
            let need = |configured: &str, k: &'static str| {
                if !configured.is_empty() {
                    return Ok(configured.to_string());
                }
                env(k)
                    .filter(|v| !v.is_empty())
                    .ok_or(ConfigError::Invalid {
                        key: "tier_bucket",
                        reason: format!(
                            "an S3 tier needs credentials: set {k} (or the tier_* key)"
                        ),
                    })
            };
            if self.tier_endpoint.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "tier_endpoint",
                    reason: "an S3 tier needs an endpoint URL".into(),
                });
            }
            return Ok(Some(TierBackend::S3 {
                endpoint: self.tier_endpoint.clone(),
                region: self.tier_region.clone(),
                bucket: self.tier_bucket.clone(),
                access_key: need(&self.tier_access_key_id, "AWS_ACCESS_KEY_ID")?,
                secret_key: need(&self.tier_secret_access_key, "AWS_SECRET_ACCESS_KEY")?,
            }));
        }
        if !self.tier_dir.is_empty() {
            return Ok(Some(TierBackend::Local {
                dir: PathBuf::from(&self.tier_dir),
            }));
        }
        Ok(None)
    }

    /// This broker's internal (admin) gRPC address as other brokers reach it.
    pub fn advertised_internal(&self) -> String {
        let host = self
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.admin_listen.ip().to_string());
        format!("{host}:{}", self.admin_listen.port())
    }

    /// The metadata quorum voters (`controller_voters`, or this broker alone).
    pub fn voters(&self) -> Result<std::collections::BTreeMap<u64, String>, ConfigError> {
        let mut out = std::collections::BTreeMap::new();
        if self.controller_voters.trim().is_empty() {
            out.insert(self.node_id as u64, self.advertised_internal());
            return Ok(out);
        }
        for item in self.controller_voters.split(',') {
            let bad = |reason: String| ConfigError::Invalid {
                key: "controller_voters",
                reason,
            };
            let (id, addr) = item
                .trim()
                .split_once('@')
                .ok_or_else(|| bad(format!("`{item}` is not id@host:port")))?;
            let id: u64 = id
                .parse()
                .map_err(|_| bad(format!("`{id}` is not a broker id")))?;
            if !addr.contains(':') {
                return Err(bad(format!("`{addr}` has no port")));
            }
            out.insert(id, addr.to_string());
        }
        if ![1, 3, 5].contains(&out.len()) {
            return Err(ConfigError::Invalid {
                key: "controller_voters",
                reason: format!("needs 1, 3 or 5 voters, got {}", out.len()),
            });
        }
        Ok(out)
    }

    /// Whether a tier backend is configured at all (an S3 bucket or a directory).
    pub fn tier_configured(&self) -> bool {
        !self.tier_bucket.is_empty() || !self.tier_dir.is_empty()
    }

    /// Directory of the tier's chunk cache.
    pub fn tier_cache_path(&self) -> PathBuf {
        if self.tier_cache_dir.is_empty() {
            self.data_dir.join("tier-cache")
        } else {
            PathBuf::from(&self.tier_cache_dir)
        }
    }

    /// Host and port clients should connect to.
    pub fn advertised(&self) -> (String, i32) {
        let host = self
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.kafka_listen.ip().to_string());
        let port = self.advertised_port.unwrap_or(self.kafka_listen.port());
        (host, i32::from(port))
    }
}
