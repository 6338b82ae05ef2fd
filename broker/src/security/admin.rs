//! Security of the admin/internal gRPC listener: the admin API (operator, `strata`
//! CLI) and the brokers' internal API (Raft, replication, forwarded calls) share it.
//!
//! * **TLS** (`admin_ssl_certificate_location`, `admin_ssl_key_location`,
//!   `admin_ssl_ca_location`): the listener speaks TLS with the certificate (reloaded
//!   when its files change, as on the Kafka listeners) and verifies client
//!   certificates against the CA. A broker presents the same certificate as its
//!   client identity when it calls another broker and verifies the other broker's
//!   against the same CA: brokers are mutually authenticated. A client certificate's
//!   subject becomes the caller's principal through `ssl_principal_mapping_rules`.
//!   `admin_ssl_client_auth` = `required` (the default) closes connections without a
//!   valid client certificate during the handshake; `requested` lets clients without
//!   one in, to authenticate with the token. Brokers dial each other by address;
//!   `admin_ssl_peer_name` names the DNS name their certificates carry, which the
//!   client side then verifies instead of the address.
//! * **Switching a running cluster to TLS** without a moment where two brokers
//!   cannot talk: `admin_ssl_accept_plaintext` makes the TLS listener also serve
//!   connections whose first byte is not a TLS handshake record (0x16), which then
//!   authenticate with the token only; `admin_ssl_connect_plaintext` keeps the
//!   broker's own calls in clear text. Rolling the brokers through (accept +
//!   connect plaintext) → (accept plaintext) → (TLS only) keeps every pair able to
//!   talk at every step; each step is a normal one-at-a-time restart.
//! * **Token** (`admin_token_file`): a call without a verified client certificate
//!   must carry `authorization: Bearer <token>`; it then acts as
//!   `admin_token_principal`. Brokers send the token to each other too, so the
//!   token alone (no TLS) already keeps unauthenticated callers out of both APIs,
//!   though in clear text.
//! * **Authorization**, when an ACL authorizer is configured: an admin API call needs
//!   ALTER on the CLUSTER, an internal call CLUSTER_ACTION (as Kafka's inter-broker
//!   requests do); super users pass.
//!
//! With neither TLS nor a token configured the listener is open, as in the
//! single-broker development defaults; the broker says so at startup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tracing::info;

use super::principal::MappingRules;
use super::tls::{ClientAuth, TlsFiles, TlsSettings};
use super::{invalid, Principal};
use crate::config::{BrokerConfig, ConfigError};

/// How long a client gets to finish the TLS handshake on the admin listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn path(v: &str) -> Option<PathBuf> {
    let v = v.trim();
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// Reads a token file: its content without surrounding whitespace, which must be
/// a valid HTTP header value and not empty.
pub fn read_token(file: &std::path::Path) -> Result<String, String> {
    let raw = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the admin token from {}: {e}", file.display()))?;
    let token = raw.trim().to_string();
    if token.is_empty() || token.parse::<MetadataValue<Ascii>>().is_err() {
        return Err(format!(
            "{} must hold a token of visible ASCII characters",
            file.display()
        ));
    }
    Ok(token)
}

/// What a client of the admin listener (another broker, the CLI, the operator)
/// needs to reach it: the CA to verify the server with, its own certificate, the
/// token.
#[derive(Debug, Clone, Default)]
pub struct AdminClientSecurity {
    /// PEM CA file the server's certificate must chain to; set: TLS.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and key presented as the client identity.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub token: Option<String>,
    /// The name the server's certificate must carry (None: the dialled host).
    pub server_name: Option<String>,
}

/// Adds the bearer token (if any) to every call of a channel.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel to an admin listener, with the token added to each call.
pub type AdminChannel = InterceptedService<Channel, BearerToken>;

impl AdminClientSecurity {
    /// The brokers' own client side: the listener's CA, certificate and token
    /// (no TLS while `admin_ssl_connect_plaintext` is set).
    pub fn for_broker(cfg: &BrokerConfig) -> Result<Self, String> {
        let identity = match (
            path(&cfg.admin_ssl_certificate_location),
            path(&cfg.admin_ssl_key_location),
        ) {
            (Some(c), Some(k)) if !cfg.admin_ssl_connect_plaintext => Some((c, k)),
            _ => None,
        };
        Ok(AdminClientSecurity {
            ca: identity
                .as_ref()
                .and_then(|_| path(&cfg.admin_ssl_ca_location)),
            identity,
            token: path(&cfg.admin_token_file)
                .map(|f| read_token(&f))
                .transpose()?,
            server_name: Some(cfg.admin_ssl_peer_name.trim())
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        })
    }

    pub fn tls(&self) -> bool {
        self.ca.is_some()
    }

    /// What tells that the TLS files were replaced (see [`super::tls::stamp_of`]).
    pub fn stamp(&self) -> super::tls::Stamp {
        let identity = self.identity.iter().flat_map(|(c, k)| [c, k]);
        super::tls::stamp_of(self.ca.iter().chain(identity))
    }

    /// An endpoint for `host:port` (or a URL whose scheme is replaced to match the
    /// TLS setting). The files are read here, so a channel made after a
    /// certificate rotation uses the new ones.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let hostport = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        let scheme = if self.tls() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{hostport}"))
            .map_err(|e| format!("invalid admin address `{addr}`: {e}"))?;
        let Some(ca) = &self.ca else {
            return Ok(endpoint);
        };
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint
            .tls_config(tls)
            .map_err(|e| format!("admin TLS settings: {e}"))
    }

    /// The interceptor that adds the token.
    pub fn bearer(&self) -> BearerToken {
        BearerToken(
            self.token
                .as_ref()
                .and_then(|t| format!("Bearer {t}").parse().ok()),
        )
    }

    pub fn wrap(&self, channel: Channel) -> AdminChannel {
        InterceptedService::new(channel, self.bearer())
    }
}

/// The server side of the admin listener's security.
#[derive(Debug)]
pub struct AdminSecurity {
    pub tls: Option<Arc<TlsFiles>>,
    /// TLS on, and connections that do not start a handshake are served too.
    pub accept_plaintext: bool,
    token: Option<String>,
    token_principal: Principal,
    mapping: MappingRules,
}

impl AdminSecurity {
    /// Checks the settings and loads the files; an error fails startup.
    pub fn from_config(cfg: &BrokerConfig) -> Result<Self, ConfigError> {
        let cert = path(&cfg.admin_ssl_certificate_location);
        let key = path(&cfg.admin_ssl_key_location);
        let ca = path(&cfg.admin_ssl_ca_location);
        let client_auth = ClientAuth::parse(&cfg.admin_ssl_client_auth)
            .filter(|a| *a != ClientAuth::None)
            .ok_or_else(|| invalid("admin_ssl_client_auth", "must be required or requested"))?;
        let tls = match (cert, key, ca) {
            (None, None, None) => None,
            (Some(certificate), Some(key), Some(ca)) => {
                let settings = TlsSettings {
                    certificate,
                    key,
                    client_ca: Some(ca),
                    client_auth,
                };
                // gRPC clients (tonic, grpc-go) insist on negotiating HTTP/2.
                let files = TlsFiles::load_with_alpn(settings, vec![b"h2".to_vec()])
                    .map_err(|e| invalid("admin_ssl_certificate_location", e))?;
                Some(Arc::new(files))
            }
            _ => {
                return Err(invalid(
                    "admin_ssl_certificate_location",
                    "admin TLS needs admin_ssl_certificate_location, admin_ssl_key_location \
                     and admin_ssl_ca_location together (brokers authenticate each other \
                     with certificates of that CA)",
                ))
            }
        };
        let token = path(&cfg.admin_token_file)
            .map(|f| read_token(&f))
            .transpose()
            .map_err(|e| invalid("admin_token_file", e))?;
        let token_principal = match cfg.admin_token_principal.trim().split_once(':') {
            Some(("User", name)) if !name.is_empty() => Principal::user(name),
            _ => {
                return Err(invalid(
                    "admin_token_principal",
                    "must be User:<name>, e.g. User:admin",
                ))
            }
        };
        let mapping = MappingRules::parse(&cfg.ssl_principal_mapping_rules)
            .map_err(|e| invalid("ssl_principal_mapping_rules", e))?;
        if cfg.admin_ssl_accept_plaintext && (tls.is_none() || token.is_none()) {
            return Err(invalid(
                "admin_ssl_accept_plaintext",
                "needs admin TLS and admin_token_file: plaintext callers authenticate with the token",
            ));
        }
        if cfg.admin_ssl_connect_plaintext && !cfg.admin_ssl_accept_plaintext {
            return Err(invalid(
                "admin_ssl_connect_plaintext",
                "needs admin_ssl_accept_plaintext: a broker that calls its peers in clear \
                 text must accept their clear-text calls too",
            ));
        }
        Ok(AdminSecurity {
            tls,
            accept_plaintext: cfg.admin_ssl_accept_plaintext,
            token,
            token_principal,
            mapping,
        })
    }

    /// Whether callers must authenticate at all.
    pub fn enabled(&self) -> bool {
        self.tls.is_some() || self.token.is_some()
    }

    /// Who makes this call: the client certificate's principal, else the token's;
    /// anonymous when the listener is open. Unauthenticated otherwise.
    pub fn authenticate<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        if let Some(p) = req
            .extensions()
            .get::<AdminPeer>()
            .and_then(|p| p.principal.clone())
        {
            return Ok(p);
        }
        if let Some(token) = &self.token {
            let given = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            return match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {
                    Ok(self.token_principal.clone())
                }
                Some(_) => Err(Status::unauthenticated("invalid admin token")),
                None => Err(Status::unauthenticated(
                    "this admin API needs a client certificate or a bearer token",
                )),
            };
        }
        if self.tls.is_some() {
            // Only reachable with admin_ssl_client_auth=requested and no token.
            return Err(Status::unauthenticated(
                "this admin API needs a client certificate",
            ));
        }
        Ok(Principal::anonymous())
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a
/// guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the admin listener knows of a connection: where from, and the principal
/// of its verified client certificate. Handed to every call of the connection.
#[derive(Debug, Clone)]
pub struct AdminPeer {
    pub addr: Option<SocketAddr>,
    pub principal: Option<Principal>,
}

/// A connection of the admin listener after the TLS handshake (or, with
/// `admin_ssl_accept_plaintext`, one that did not start one).
pub struct AdminTlsStream {
    inner: AdminIo,
    peer: AdminPeer,
}

enum AdminIo {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl AdminTlsStream {
    /// Completes the handshake of an accepted connection and reads the principal of
    /// its client certificate. With plaintext accepted, a connection whose first
    /// byte is not a TLS handshake record is served as it is, without a principal
    /// (its calls need the token).
    pub async fn accept(
        security: &AdminSecurity,
        tls: &TlsFiles,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<Self, String> {
        if security.accept_plaintext {
            let mut first = [0u8; 1];
            let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first))
                .await
                .map_err(|_| "nothing received before the handshake timeout".to_string())?
                .map_err(|e| format!("reading the first byte: {e}"))?;
            if n == 0 {
                return Err("closed before sending anything".into());
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                return Ok(AdminTlsStream {
                    inner: AdminIo::Plain(tcp),
                    peer: AdminPeer {
                        addr: Some(addr),
                        principal: None,
                    },
                });
            }
        }
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let principal = match cert {
            Some(c) => {
                let (p, _) = security.mapping.certificate_principal(c)?;
                info!(peer = %addr, principal = %p, "admin client certificate accepted");
                Some(p)
            }
            None => None,
        };
        Ok(AdminTlsStream {
            inner: AdminIo::Tls(Box::new(stream)),
            peer: AdminPeer {
                addr: Some(addr),
                principal,
            },
        })
    }
}

impl Connected for AdminTlsStream {
    type ConnectInfo = AdminPeer;

    fn connect_info(&self) -> AdminPeer {
        self.peer.clone()
    }
}

macro_rules! admin_io {
    ($self:ident, $io:ident => $e:expr) => {
        match &mut $self.inner {
            AdminIo::Tls(t) => {
                let $io = Pin::new(t.as_mut());
                $e
            }
            AdminIo::Plain(p) => {
                let $io = Pin::new(p);
                $e
            }
        }
    };
}

impl AsyncRead for AdminTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        admin_io!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for AdminTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        admin_io!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        admin_io!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        admin_io!(self, io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        admin_io!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            AdminIo::Tls(t) => t.is_write_vectored(),
            AdminIo::Plain(p) => p.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    fn cfg() -> BrokerConfig {
        BrokerConfig::default()
    }

    #[test]
    fn settings_are_checked() {
        let open = AdminSecurity::from_config(&cfg()).unwrap();
        assert!(!open.enabled());
        let mut c = cfg();
        c.admin_ssl_certificate_location = "/nowhere/cert.pem".into();
        let e = AdminSecurity::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("together"), "{e}");
        let mut c = cfg();
        c.admin_ssl_client_auth = "none".into();
        assert!(AdminSecurity::from_config(&c).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  s3cret\n").unwrap();
        let mut c = cfg();
        c.admin_token_file = f.display().to_string();
        let s = AdminSecurity::from_config(&c).unwrap();
        assert!(s.enabled());
        let mut req = Request::new(());
        assert_eq!(
            s.authenticate(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        req.metadata_mut()
            .insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(
            s.authenticate(&req).unwrap_err().message(),
            "invalid admin token"
        );
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(s.authenticate(&req).unwrap().to_string(), "User:admin");
        std::fs::write(&f, "\n").unwrap();
        assert!(AdminSecurity::from_config(&c).is_err());
    }

    #[test]
    fn clear_text_during_a_switch_needs_tls_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret").unwrap();
        // Without TLS there is nothing to accept besides clear text.
        let mut c = cfg();
        c.admin_token_file = f.display().to_string();
        c.admin_ssl_accept_plaintext = true;
        let e = AdminSecurity::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("admin_ssl_accept_plaintext"), "{e}");
        // Calling peers in clear text while refusing theirs would split the cluster.
        let mut c = cfg();
        c.admin_ssl_connect_plaintext = true;
        let e = AdminSecurity::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("admin_ssl_connect_plaintext"), "{e}");
    }

    #[test]
    fn the_broker_client_side_follows_the_switch_and_the_peer_name() {
        let mut c = cfg();
        c.admin_ssl_certificate_location = "/tls/tls.crt".into();
        c.admin_ssl_key_location = "/tls/tls.key".into();
        c.admin_ssl_ca_location = "/tls/ca.crt".into();
        c.admin_ssl_peer_name = " brokers.example.svc ".into();
        let tls = AdminClientSecurity::for_broker(&c).unwrap();
        assert!(tls.tls());
        assert_eq!(tls.server_name.as_deref(), Some("brokers.example.svc"));
        c.admin_ssl_connect_plaintext = true;
        let plain = AdminClientSecurity::for_broker(&c).unwrap();
        assert!(!plain.tls() && plain.identity.is_none());
    }
}
