//! Named Kafka listeners as Kafka configures them: `listeners`
//! (`NAME://host:port,...`), `advertised_listeners` and
//! `listener_security_protocol_map` (`NAME:PROTOCOL,...`). Without `listeners`, the
//! broker has one PLAINTEXT listener named `PLAINTEXT` on `kafka_listen`,
//! advertising `advertised_host`/`advertised_port`, exactly as before listeners
//! had names. Parsing is pure; binding happens in `app.rs`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::{BrokerConfig, ConfigError};
use crate::metadata::cluster::Endpoint;

/// How a listener secures its connections (Kafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Clients authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One Kafka listener: where it binds, what it advertises, how it is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// The name of the listener `kafka_listen` configures when `listeners` is empty.
pub const DEFAULT_LISTENER: &str = "PLAINTEXT";

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// Splits `NAME://host:port` into its name, host and port.
fn split_endpoint(key: &'static str, item: &str) -> Result<(String, String, u16), ConfigError> {
    let (name, rest) = item
        .split_once("://")
        .ok_or_else(|| invalid(key, format!("`{item}` is not NAME://host:port")))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, format!("`{item}` has no port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(key, format!("`{port}` in `{item}` is not a port")))?;
    let name = name.trim().to_ascii_uppercase();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(invalid(key, format!("`{name}` is not a listener name")));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((name, host.to_string(), port))
}

fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

/// The listeners `cfg` describes, in the order configured (the first one is the
/// inter-broker listener unless `inter_broker_listener_name` says otherwise).
pub fn listeners(cfg: &BrokerConfig) -> Result<Vec<Listener>, ConfigError> {
    if cfg.listeners.trim().is_empty() {
        let (host, port) = cfg.advertised();
        return Ok(vec![Listener {
            name: DEFAULT_LISTENER.into(),
            protocol: SecurityProtocol::Plaintext,
            bind: cfg.kafka_listen,
            advertised_host: host,
            advertised_port: port,
        }]);
    }
    let mut protocols = BTreeMap::new();
    for item in entries(&cfg.listener_security_protocol_map) {
        let key = "listener_security_protocol_map";
        let (name, proto) = item
            .split_once(':')
            .ok_or_else(|| invalid(key, format!("`{item}` is not NAME:PROTOCOL")))?;
        let proto = SecurityProtocol::parse(proto)
            .ok_or_else(|| invalid(key, format!("unknown security protocol `{proto}`")))?;
        protocols.insert(name.trim().to_ascii_uppercase(), proto);
    }
    let mut advertised = BTreeMap::new();
    for item in entries(&cfg.advertised_listeners) {
        let (name, host, port) = split_endpoint("advertised_listeners", item)?;
        if host.is_empty() {
            return Err(invalid(
                "advertised_listeners",
                format!("`{item}` needs a host clients can reach"),
            ));
        }
        advertised.insert(name, (host, port));
    }
    let mut out: Vec<Listener> = Vec::new();
    for item in entries(&cfg.listeners) {
        let key = "listeners";
        let (name, host, port) = split_endpoint(key, item)?;
        if out.iter().any(|l| l.name == name) {
            return Err(invalid(key, format!("listener {name} is listed twice")));
        }
        let protocol = protocols
            .get(&name)
            .copied()
            .or_else(|| SecurityProtocol::parse(&name))
            .ok_or_else(|| {
                invalid(
                    "listener_security_protocol_map",
                    format!("no security protocol for listener {name}"),
                )
            })?;
        let bind_host = if host.is_empty() { "0.0.0.0" } else { &host };
        let bind = (bind_host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| invalid(key, format!("cannot resolve `{bind_host}` of {name}")))?;
        let (advertised_host, advertised_port) = match advertised.remove(&name) {
            Some(a) => a,
            None => (
                cfg.advertised_host
                    .clone()
                    .unwrap_or_else(|| bind.ip().to_string()),
                port,
            ),
        };
        out.push(Listener {
            name,
            protocol,
            bind,
            advertised_host,
            advertised_port: i32::from(advertised_port),
        });
    }
    if out.is_empty() {
        return Err(invalid("listeners", "no listener configured".into()));
    }
    if let Some(name) = advertised.keys().next() {
        return Err(invalid(
            "advertised_listeners",
            format!("{name} is not in listeners"),
        ));
    }
    Ok(out)
}

/// The listener other brokers send Kafka requests to.
pub fn inter_broker<'a>(
    cfg: &BrokerConfig,
    all: &'a [Listener],
) -> Result<&'a Listener, ConfigError> {
    let key = "inter_broker_listener_name";
    let wanted = cfg.inter_broker_listener_name.trim().to_ascii_uppercase();
    let l = if wanted.is_empty() {
        all.first()
    } else {
        all.iter().find(|l| l.name == wanted)
    }
    .ok_or_else(|| invalid(key, format!("{wanted} is not in listeners")))?;
    if l.protocol != SecurityProtocol::Plaintext {
        return Err(invalid(
            key,
            format!(
                "listener {} is {}: brokers reach each other over a PLAINTEXT listener \
                 (add an internal one and name it here)",
                l.name,
                l.protocol.name()
            ),
        ));
    }
    Ok(l)
}

/// What this broker registers in the metadata quorum: the inter-broker listener's
/// advertised host and port, and every listener's advertised endpoint. (The
/// configuration was checked at load; should it not parse here, the broker
/// registers `kafka_listen` alone, as before listeners had names.)
pub fn registration(cfg: &BrokerConfig) -> (String, i32, BTreeMap<String, Endpoint>) {
    let parsed = listeners(cfg).and_then(|all| {
        let ib = inter_broker(cfg, &all)?.clone();
        Ok((all, ib))
    });
    match parsed {
        Ok((all, ib)) => (
            ib.advertised_host,
            ib.advertised_port,
            all.into_iter()
                .map(|l| {
                    (
                        l.name,
                        Endpoint {
                            host: l.advertised_host,
                            port: l.advertised_port,
                        },
                    )
                })
                .collect(),
        ),
        Err(_) => {
            let (host, port) = cfg.advertised();
            (host, port, BTreeMap::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_listeners_kafka_listen_is_the_plaintext_listener() {
        let c = BrokerConfig {
            advertised_host: Some("10.0.0.1".into()),
            ..BrokerConfig::default()
        };
        let l = listeners(&c).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "PLAINTEXT");
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l[0].bind, c.kafka_listen);
        assert_eq!(
            (l[0].advertised_host.as_str(), l[0].advertised_port),
            ("10.0.0.1", 9092)
        );
    }

    #[test]
    fn named_listeners_take_their_protocols_and_advertised_addresses() {
        let c = BrokerConfig {
            listeners: "PLAIN://127.0.0.1:9092, SECURE://127.0.0.1:9094,SSL://:9095".into(),
            advertised_listeners: "SECURE://broker-0.example:19094".into(),
            listener_security_protocol_map: "PLAIN:PLAINTEXT,SECURE:SASL_SSL".into(),
            ..BrokerConfig::default()
        };
        let l = listeners(&c).unwrap();
        let got: Vec<_> = l
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.protocol,
                    l.advertised_host.as_str(),
                    l.advertised_port,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("PLAIN", SecurityProtocol::Plaintext, "127.0.0.1", 9092),
                (
                    "SECURE",
                    SecurityProtocol::SaslSsl,
                    "broker-0.example",
                    19094
                ),
                ("SSL", SecurityProtocol::Ssl, "0.0.0.0", 9095),
            ]
        );
        assert_eq!(inter_broker(&c, &l).unwrap().name, "PLAIN");
    }

    #[test]
    fn bad_listener_settings_name_the_key() {
        for (listeners_, map, adv, ib, key) in [
            ("PLAIN//x:1", "", "", "", "listeners"),
            (
                "FOO://127.0.0.1:1",
                "",
                "",
                "",
                "listener_security_protocol_map",
            ),
            (
                "A://127.0.0.1:1",
                "A:TLS",
                "",
                "",
                "listener_security_protocol_map",
            ),
            (
                "SSL://127.0.0.1:1",
                "",
                "",
                "",
                "inter_broker_listener_name",
            ),
            (
                "PLAINTEXT://127.0.0.1:1",
                "",
                "OTHER://h:2",
                "",
                "advertised_listeners",
            ),
            (
                "PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2",
                "",
                "",
                "",
                "listeners",
            ),
            (
                "PLAINTEXT://127.0.0.1:1",
                "",
                "",
                "NOPE",
                "inter_broker_listener_name",
            ),
        ] {
            let c = BrokerConfig {
                listeners: listeners_.into(),
                listener_security_protocol_map: map.into(),
                advertised_listeners: adv.into(),
                inter_broker_listener_name: ib.into(),
                ..BrokerConfig::default()
            };
            let e = listeners(&c)
                .and_then(|l| inter_broker(&c, &l).map(drop))
                .unwrap_err();
            assert!(e.to_string().contains(key), "{listeners_}: {e}");
        }
    }
}
