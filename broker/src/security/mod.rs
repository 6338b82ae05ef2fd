//! Authentication on the Kafka listeners: named listeners and their security
//! protocols (`listeners`), TLS with reloadable certificates and optional client
//! certificates (`tls`), SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 with KIP-368
//! re-authentication (`sasl`, `scram`), and the principal each connection acts as
//! (`principal`), which the dispatcher hands every handler in [`ClientContext`].
//! SCRAM credentials live in the metadata quorum (`ClusterState::scram_credentials`)
//! and are managed with Describe/AlterUserScramCredentials
//! (`kafka::scram_users`). Authorization: Kafka's ACL model and decisions (`acl`),
//! the ACLs stored in the quorum (`ClusterState::acls`), checked per request by
//! `kafka::authorize` when an authorizer is configured. See docs/security.md.

pub mod acl;
pub mod admin;
pub mod authorizer;
pub mod listeners;
pub mod oauth;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use listeners::{Listener, SecurityProtocol};
pub use principal::Principal;

use crate::config::{BrokerConfig, ConfigError};
use principal::MappingRules;
use sasl::{AuthMetrics, Mechanism, SaslConfig};
use tls::{ClientAuth, TlsFiles, TlsSettings};

/// Who sent a request and where: what every handler sees of its connection.
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// The listener the connection came in on; Metadata, FindCoordinator and
    /// DescribeCluster advertise this listener's endpoints.
    pub listener: Arc<str>,
    pub principal: Principal,
    pub peer: SocketAddr,
}

impl ClientContext {
    /// A plaintext client of the default listener (tests and internal callers).
    pub fn plaintext(peer: SocketAddr) -> Self {
        ClientContext {
            listener: Arc::from(listeners::DEFAULT_LISTENER),
            principal: Principal::anonymous(),
            peer,
        }
    }
}

/// The security settings of the broker, checked (files are read by [`Self::runtime`]).
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub listeners: Vec<Listener>,
    /// The listener other brokers use (advertised as the broker's main address).
    pub inter_broker: Listener,
    pub tls: Option<TlsSettings>,
    pub mechanisms: Vec<Mechanism>,
    pub mapping: MappingRules,
    pub reauth_ms: i64,
    pub max_receive_size: usize,
    /// The JWT validator, when OAUTHBEARER is enabled.
    pub oauth: Option<Arc<oauth::OAuthValidator>>,
}

pub(super) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl SecuritySettings {
    pub fn from_config(cfg: &BrokerConfig) -> Result<Self, ConfigError> {
        let all = listeners::listeners(cfg)?;
        let inter_broker = listeners::inter_broker(cfg, &all)?.clone();
        let client_auth = ClientAuth::parse(&cfg.ssl_client_auth)
            .ok_or_else(|| invalid("ssl_client_auth", "must be none, requested or required"))?;
        let tls = if all.iter().any(|l| l.protocol.tls()) {
            let need = |v: &str, key: &'static str| {
                if v.trim().is_empty() {
                    Err(invalid(key, "an SSL or SASL_SSL listener needs it"))
                } else {
                    Ok(PathBuf::from(v.trim()))
                }
            };
            let client_ca = (!cfg.ssl_ca_location.trim().is_empty())
                .then(|| PathBuf::from(cfg.ssl_ca_location.trim()));
            if client_auth != ClientAuth::None && client_ca.is_none() {
                return Err(invalid(
                    "ssl_ca_location",
                    "ssl_client_auth requested/required needs the CA of the client certificates",
                ));
            }
            Some(TlsSettings {
                certificate: need(&cfg.ssl_certificate_location, "ssl_certificate_location")?,
                key: need(&cfg.ssl_key_location, "ssl_key_location")?,
                client_ca,
                client_auth,
            })
        } else {
            None
        };
        let mut mechanisms = Vec::new();
        for m in cfg
            .sasl_enabled_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let mech = Mechanism::parse(m).ok_or_else(|| {
                invalid(
                    "sasl_enabled_mechanisms",
                    format!("`{m}` is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"),
                )
            })?;
            if !mechanisms.contains(&mech) {
                mechanisms.push(mech);
            }
        }
        if mechanisms.is_empty() && all.iter().any(|l| l.protocol.sasl()) {
            return Err(invalid(
                "sasl_enabled_mechanisms",
                "a SASL listener needs at least one mechanism",
            ));
        }
        let oauth = if mechanisms.contains(&Mechanism::OAuthBearer) {
            let key = "sasl_oauthbearer_jwks_endpoint_url";
            let url = cfg.sasl_oauthbearer_jwks_endpoint_url.trim();
            if url.is_empty() {
                return Err(invalid(
                    key,
                    "OAUTHBEARER needs the JWKS (a file or an http:// or https:// URL)",
                ));
            }
            let source = oauth::JwksSource::parse(url).map_err(|e| invalid(key, e))?;
            let tls = if source.https() {
                Some(
                    oauth::jwks_tls(&cfg.sasl_oauthbearer_jwks_endpoint_ca_location)
                        .map_err(|e| invalid("sasl_oauthbearer_jwks_endpoint_ca_location", e))?,
                )
            } else {
                None
            };
            if cfg.sasl_oauthbearer_sub_claim_name.trim().is_empty() {
                return Err(invalid("sasl_oauthbearer_sub_claim_name", "is empty"));
            }
            if cfg.sasl_oauthbearer_jwks_endpoint_refresh_ms < 1000 {
                return Err(invalid(
                    "sasl_oauthbearer_jwks_endpoint_refresh_ms",
                    "must be >= 1000",
                ));
            }
            let issuer = cfg.sasl_oauthbearer_expected_issuer.trim();
            Some(Arc::new(oauth::OAuthValidator::new(
                source,
                tls,
                std::time::Duration::from_millis(cfg.sasl_oauthbearer_jwks_endpoint_refresh_ms),
                oauth::Expectations {
                    issuer: (!issuer.is_empty()).then(|| issuer.to_string()),
                    audiences: cfg
                        .sasl_oauthbearer_expected_audience
                        .split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(String::from)
                        .collect(),
                    sub_claim: cfg.sasl_oauthbearer_sub_claim_name.trim().to_string(),
                    skew: std::time::Duration::from_secs(cfg.sasl_oauthbearer_clock_skew_seconds),
                },
            )))
        } else {
            None
        };
        let mapping = MappingRules::parse(&cfg.ssl_principal_mapping_rules)
            .map_err(|e| invalid("ssl_principal_mapping_rules", e))?;
        if cfg.connections_max_reauth_ms < 0 {
            return Err(invalid("connections_max_reauth_ms", "must be >= 0"));
        }
        if cfg.sasl_server_max_receive_size < 1024 {
            return Err(invalid("sasl_server_max_receive_size", "must be >= 1024"));
        }
        Ok(SecuritySettings {
            listeners: all,
            inter_broker,
            tls,
            mechanisms,
            mapping,
            reauth_ms: cfg.connections_max_reauth_ms,
            max_receive_size: cfg.sasl_server_max_receive_size,
            oauth,
        })
    }

    /// What the listeners need at run time: the TLS files loaded (an error names
    /// the file), the SASL settings and metrics.
    pub fn runtime(
        &self,
        meter: &opentelemetry::metrics::Meter,
    ) -> Result<Vec<ListenerSecurity>, String> {
        let tls = match &self.tls {
            Some(s) => Some(Arc::new(TlsFiles::load(s.clone())?)),
            None => None,
        };
        let sasl = Arc::new(SaslConfig {
            mechanisms: self.mechanisms.clone(),
            reauth_ms: self.reauth_ms,
            max_receive_size: self.max_receive_size,
            metrics: AuthMetrics::new(meter),
            oauth: self.oauth.clone(),
        });
        let mapping = Arc::new(self.mapping.clone());
        Ok(self
            .listeners
            .iter()
            .map(|l| ListenerSecurity {
                name: Arc::from(l.name.as_str()),
                listener: l.clone(),
                tls: l.protocol.tls().then(|| tls.clone()).flatten(),
                sasl: l.protocol.sasl().then(|| Arc::clone(&sasl)),
                mapping: Arc::clone(&mapping),
            })
            .collect())
    }
}

/// One listener's security, shared by its connections.
#[derive(Debug, Clone)]
pub struct ListenerSecurity {
    pub name: Arc<str>,
    pub listener: Listener,
    pub tls: Option<Arc<TlsFiles>>,
    pub sasl: Option<Arc<SaslConfig>>,
    pub mapping: Arc<MappingRules>,
}
