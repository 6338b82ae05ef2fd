//! The SASL state machine of one connection on a SASL_PLAINTEXT / SASL_SSL
//! listener, in front of the dispatcher: every frame passes through
//! [`SaslSession::on_frame`] first.
//!
//! * Before authentication only ApiVersions, SaslHandshake and SaslAuthenticate
//!   are served; anything else closes the connection (as Kafka does), and frames
//!   above `sasl_server_max_receive_size` close it too.
//! * SaslHandshake v1 picks the mechanism, then SaslAuthenticate carries the
//!   tokens; after SaslHandshake v0 the tokens come as bare length-prefixed frames
//!   (Kafka's legacy exchange) and are answered the same way.
//! * PLAIN is checked against the user's stored SCRAM credential (SHA-512 if it
//!   has one, else SHA-256): one user store, and no password kept anywhere.
//! * A failure answers SASL_AUTHENTICATION_FAILED with a message that names no
//!   secret (and does not say whether the user exists), then closes the connection;
//!   it is logged with the listener, the peer, the mechanism and the username, and
//!   counted in `strata_authentication_failures`.
//! * KIP-368: with `connections_max_reauth_ms`, SaslAuthenticate v1+ tells the
//!   client its session lifetime; a client re-authenticates with a new handshake
//!   on the same connection (as the same principal); a request after the session
//!   expired, other than the re-authentication itself, closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tracing::{info, warn};

use super::oauth::{self, OAuthValidator};
use super::principal::Principal;
use super::scram::{self, ScramMechanism, ScramServer};
use crate::broker::Broker;
use crate::kafka::dispatch::{decode_frame, encode, Outcome, Rejected};
use crate::kafka::str_bytes;

/// A SASL mechanism served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "PLAIN" => Some(Mechanism::Plain),
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
            other => ScramMechanism::from_name(other).map(Mechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// What every SASL connection of the broker shares.
#[derive(Debug)]
pub struct SaslConfig {
    pub mechanisms: Vec<Mechanism>,
    /// 0: sessions never expire.
    pub reauth_ms: i64,
    pub max_receive_size: usize,
    pub metrics: AuthMetrics,
    /// The JWT checks of OAUTHBEARER (when it is enabled).
    pub oauth: Option<Arc<OAuthValidator>>,
}

/// Authentication outcomes, by listener and mechanism.
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    pub failures: Counter<u64>,
    pub successes: Counter<u64>,
}

impl AuthMetrics {
    pub fn new(meter: &opentelemetry::metrics::Meter) -> Self {
        let m = AuthMetrics {
            failures: meter
                .u64_counter("strata_authentication_failures")
                .with_description("Failed SASL authentications, by listener and mechanism")
                .build(),
            successes: meter
                .u64_counter("strata_authentications")
                .with_description("Successful SASL authentications (re-authentications included)")
                .build(),
        };
        // Listed on /metrics from the start, before the first authentication.
        m.failures.add(0, &[]);
        m.successes.add(0, &[]);
        m
    }
}

/// The exchange in progress.
#[derive(Debug)]
enum Exchange {
    Idle,
    /// A handshake chose the mechanism; `legacy`: after SaslHandshake v0.
    Chosen {
        mech: Mechanism,
        legacy: bool,
    },
    /// SCRAM: the server-first message was sent.
    Scram {
        server: ScramServer,
        legacy: bool,
    },
    /// OAUTHBEARER: the token was refused and the RFC 7628 error sent; the
    /// client's acknowledgement (`\x01`) gets the failure.
    OAuthFailed {
        legacy: bool,
    },
}

#[derive(Debug)]
struct Authenticated {
    principal: Principal,
    mech: Mechanism,
    expires: Option<Instant>,
    /// The session lifetime told to the client, in ms (0: none).
    lifetime_ms: i64,
}

/// What to do with a frame.
pub enum Step {
    /// An authenticated request (or ApiVersions): on to the dispatcher.
    Pass,
    /// Answered (or refused) here.
    Done(Outcome),
}

/// One connection's SASL state.
pub struct SaslSession {
    config: Arc<SaslConfig>,
    listener: Arc<str>,
    peer: SocketAddr,
    exchange: Exchange,
    authenticated: Option<Authenticated>,
    /// Set when the last token completed an authentication (its SaslAuthenticate
    /// answer carries the session lifetime).
    completed: bool,
}

const FAILED_MESSAGE: &str = "Authentication failed: invalid username or password";
const OAUTH_FAILED: &str = "Authentication failed: invalid_token";

impl SaslSession {
    pub fn new(config: Arc<SaslConfig>, listener: Arc<str>, peer: SocketAddr) -> Self {
        SaslSession {
            config,
            listener,
            peer,
            exchange: Exchange::Idle,
            authenticated: None,
            completed: false,
        }
    }

    /// The authenticated principal, once there is one.
    pub fn principal(&self) -> Option<&Principal> {
        self.authenticated.as_ref().map(|a| &a.principal)
    }

    /// The largest frame accepted now.
    pub fn frame_limit(&self, default: usize) -> usize {
        if self.authenticated.is_some() {
            default
        } else {
            default.min(self.config.max_receive_size)
        }
    }

    fn legacy_tokens(&self) -> bool {
        matches!(
            self.exchange,
            Exchange::Chosen { legacy: true, .. }
                | Exchange::Scram { legacy: true, .. }
                | Exchange::OAuthFailed { legacy: true }
        )
    }

    pub async fn on_frame(&mut self, broker: &Arc<Broker>, frame: &Bytes) -> Step {
        if self.legacy_tokens() {
            return match self.token(broker, frame.clone()).await {
                Ok(reply) => {
                    let mut out = BytesMut::with_capacity(reply.len() + 4);
                    out.put_u32(reply.len() as u32);
                    out.extend_from_slice(&reply);
                    Step::Done(Outcome::Reply(out.freeze()))
                }
                Err(_) => Step::Done(Outcome::Close("SASL authentication failed".into())),
            };
        }
        if frame.len() < 4 {
            return Step::Done(Outcome::Close("request header truncated".into()));
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => Step::Pass,
            Ok(ApiKey::SaslHandshake) | Ok(ApiKey::SaslAuthenticate) => {
                Step::Done(self.sasl_request(broker, frame.clone()).await)
            }
            _ => match &self.authenticated {
                Some(a) if a.expires.is_none_or(|t| Instant::now() < t) => Step::Pass,
                Some(a) => Step::Done(Outcome::Close(format!(
                    "SASL session of {} expired without re-authentication",
                    a.principal
                ))),
                None => Step::Done(Outcome::Close(format!(
                    "request with API key {key} before SASL authentication"
                ))),
            },
        }
    }

    async fn sasl_request(&mut self, broker: &Arc<Broker>, frame: Bytes) -> Outcome {
        let req = match decode_frame(frame) {
            Ok(r) => r,
            Err(Rejected::Close(why)) => return Outcome::Close(why),
            Err(Rejected::ApiVersionsUnsupported { .. }) => {
                return Outcome::Close("bad SASL request".into())
            }
        };
        let (api, version, correlation_id) = (req.api, req.version, req.correlation_id);
        match req.body {
            RequestKind::SaslHandshake(r) => {
                let mut resp = SaslHandshakeResponse::default();
                resp.mechanisms = self
                    .config
                    .mechanisms
                    .iter()
                    .map(|m| str_bytes(m.name()))
                    .collect();
                let chosen = Mechanism::parse(r.mechanism.as_str())
                    .filter(|m| self.config.mechanisms.contains(m));
                let error = match (&self.exchange, chosen) {
                    (Exchange::Idle, Some(mech)) => {
                        self.exchange = Exchange::Chosen {
                            mech,
                            legacy: version == 0,
                        };
                        None
                    }
                    (Exchange::Idle, None) => Some(ResponseError::UnsupportedSaslMechanism),
                    _ => Some(ResponseError::IllegalSaslState),
                };
                let encoded = encode(api, version, correlation_id, &resp_with(resp, error));
                match (error, encoded) {
                    (None, Ok(b)) => Outcome::Reply(b),
                    (Some(e), Ok(b)) => {
                        // The client's string is not a metric label (unbounded); the
                        // log gets a bounded piece of it.
                        let asked: String = r.mechanism.as_str().chars().take(64).collect();
                        let label = chosen.map_or("unsupported", Mechanism::name);
                        self.fail(label, None, &format!("{e:?} (asked for {asked:?})"));
                        Outcome::CloseAfter(b)
                    }
                    (_, Err(e)) => Outcome::Close(e),
                }
            }
            RequestKind::SaslAuthenticate(r) => {
                let mut resp = SaslAuthenticateResponse::default();
                if matches!(self.exchange, Exchange::Idle) {
                    resp.error_code = ResponseError::IllegalSaslState.code();
                    resp.error_message = Some(str_bytes("SaslAuthenticate before SaslHandshake"));
                    return close_after(encode(api, version, correlation_id, &resp));
                }
                match self.token(broker, r.auth_bytes).await {
                    Ok(reply) => {
                        resp.auth_bytes = reply;
                        if version >= 1 && std::mem::take(&mut self.completed) {
                            resp.session_lifetime_ms = self.session_lifetime_ms();
                        }
                        match encode(api, version, correlation_id, &resp) {
                            Ok(b) => Outcome::Reply(b),
                            Err(e) => Outcome::Close(e),
                        }
                    }
                    Err(message) => {
                        resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                        resp.error_message = Some(str_bytes(message));
                        close_after(encode(api, version, correlation_id, &resp))
                    }
                }
            }
            _ => Outcome::Close("not a SASL request".into()),
        }
    }

    /// One SASL token of the exchange in progress: the answer token, or the
    /// message for the client when authentication failed (already logged).
    async fn token(&mut self, broker: &Arc<Broker>, token: Bytes) -> Result<Bytes, String> {
        match std::mem::replace(&mut self.exchange, Exchange::Idle) {
            Exchange::Idle => Err("no SASL exchange in progress".into()),
            Exchange::OAuthFailed { .. } => Err(OAUTH_FAILED.into()),
            Exchange::Chosen {
                mech: Mechanism::OAuthBearer,
                legacy,
            } => {
                let verdict = match &self.config.oauth {
                    None => Err("OAUTHBEARER is not configured".to_string()),
                    Some(v) => match oauth::parse_client_message(&token) {
                        Ok(jwt) => v.validate(jwt).await,
                        Err(e) => Err(format!("malformed client message: {e}")),
                    },
                };
                match verdict {
                    Ok(accepted) => {
                        self.succeed_until(
                            Mechanism::OAuthBearer,
                            &accepted.name,
                            Some(accepted.expires),
                        )?;
                        Ok(Bytes::new())
                    }
                    Err(why) => {
                        self.fail("OAUTHBEARER", None, &why);
                        // RFC 7628 3.2.2: the error as a challenge; the failure
                        // follows the client's acknowledgement.
                        self.exchange = Exchange::OAuthFailed { legacy };
                        Ok(Bytes::from_static(br#"{"status":"invalid_token"}"#))
                    }
                }
            }
            Exchange::Chosen {
                mech: Mechanism::Plain,
                ..
            } => {
                let (user, verdict) = plain(broker, &token).await;
                match verdict {
                    Ok(()) => {
                        self.succeed(Mechanism::Plain, &user)?;
                        Ok(Bytes::new())
                    }
                    Err(why) => {
                        self.fail("PLAIN", Some(&user), &why);
                        Err(FAILED_MESSAGE.into())
                    }
                }
            }
            Exchange::Chosen {
                mech: Mechanism::Scram(m),
                legacy,
            } => {
                let started = scram::server_nonce().and_then(|nonce| {
                    ScramServer::client_first(m, &token, &nonce, |user| {
                        broker
                            .cluster()
                            .scram_credentials
                            .get(user)
                            .and_then(|c| c.get(&m))
                            .cloned()
                    })
                });
                match started {
                    Ok((server, first)) => {
                        self.exchange = Exchange::Scram { server, legacy };
                        Ok(Bytes::from(first))
                    }
                    Err(e) => {
                        self.fail(m.name(), None, &e.0);
                        Err(scram_failed(m))
                    }
                }
            }
            Exchange::Scram { server, .. } => {
                let user = server.username().to_string();
                let mech = server.mechanism();
                match server.client_final(&token) {
                    Ok((user, last)) => {
                        self.succeed(Mechanism::Scram(mech), &user)?;
                        Ok(Bytes::from(last))
                    }
                    Err(e) => {
                        self.fail(mech.name(), Some(&user), &e.0);
                        Err(scram_failed(mech))
                    }
                }
            }
        }
    }

    fn labels(&self, mech: &str) -> [KeyValue; 2] {
        [
            KeyValue::new("listener", self.listener.to_string()),
            KeyValue::new("mechanism", mech.to_string()),
        ]
    }

    fn fail(&self, mech: &str, user: Option<&str>, why: &str) {
        self.config.metrics.failures.add(1, &self.labels(mech));
        // Client-chosen: bounded in the log.
        let user: String = user.unwrap_or("-").chars().take(128).collect();
        let reason: String = why.chars().take(256).collect();
        warn!(listener = %self.listener, peer = %self.peer, mechanism = mech, user, reason, "authentication failed");
    }

    fn succeed(&mut self, mech: Mechanism, user: &str) -> Result<(), String> {
        self.succeed_until(mech, user, None)
    }

    /// What SaslAuthenticate tells the client its session lasts, in ms (0: forever).
    fn session_lifetime_ms(&self) -> i64 {
        self.authenticated.as_ref().map_or(0, |a| a.lifetime_ms)
    }

    /// Authenticated as `user`, with a credential valid until `credential_expires`
    /// (an OAUTHBEARER token): the session ends at the earlier of that and
    /// `connections_max_reauth_ms`, as Kafka's does.
    fn succeed_until(
        &mut self,
        mech: Mechanism,
        user: &str,
        credential_expires: Option<std::time::SystemTime>,
    ) -> Result<(), String> {
        let principal = Principal::user(user);
        if let Some(prev) = &self.authenticated {
            if prev.principal != principal || prev.mech != mech {
                let why = format!(
                    "re-authentication as {principal} ({}) on a connection of {} ({})",
                    mech.name(),
                    prev.principal,
                    prev.mech.name()
                );
                self.fail(mech.name(), Some(user), &why);
                return Err(
                    "Cannot change principals or mechanisms during re-authentication".into(),
                );
            }
        }
        self.config
            .metrics
            .successes
            .add(1, &self.labels(mech.name()));
        let reauth = self.authenticated.is_some();
        info!(listener = %self.listener, peer = %self.peer, mechanism = mech.name(), %principal, reauth, "authenticated");
        let by_config = (self.config.reauth_ms > 0).then_some(self.config.reauth_ms);
        let by_credential = credential_expires.map(|t| {
            let left = t
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .as_millis();
            i64::try_from(left).unwrap_or(i64::MAX).max(1)
        });
        let lifetime_ms = match (by_config, by_credential) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires =
            lifetime_ms.map(|ms| Instant::now() + Duration::from_millis(ms.unsigned_abs()));
        self.completed = true;
        self.authenticated = Some(Authenticated {
            principal,
            mech,
            expires,
            lifetime_ms: lifetime_ms.unwrap_or(0),
        });
        Ok(())
    }
}

fn scram_failed(m: ScramMechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        m.name()
    )
}

fn resp_with(mut r: SaslHandshakeResponse, e: Option<ResponseError>) -> SaslHandshakeResponse {
    r.error_code = e.map_or(0, |e| e.code());
    r
}

fn close_after(r: Result<Bytes, String>) -> Outcome {
    match r {
        Ok(b) => Outcome::CloseAfter(b),
        Err(e) => Outcome::Close(e),
    }
}

/// Splits a PLAIN token (`authzid NUL authcid NUL password`) into the username
/// and the password; the authorization id must be empty or the username.
pub fn parse_plain(token: &[u8]) -> Result<(String, &[u8]), (String, String)> {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authz), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(("-".into(), "malformed PLAIN token".into()));
    };
    let Ok(user) = std::str::from_utf8(user).map(str::to_string) else {
        return Err(("-".into(), "username is not UTF-8".into()));
    };
    if user.is_empty() {
        return Err(("-".into(), "empty username".into()));
    }
    if !authz.is_empty() && authz != user.as_bytes() {
        return Err((user, "authorization id differs from the username".into()));
    }
    Ok((user, password))
}

/// Checks a PLAIN token against the stored SCRAM credential: the username (for
/// the log) and the verdict.
async fn plain(broker: &Arc<Broker>, token: &[u8]) -> (String, Result<(), String>) {
    let (user, password) = match parse_plain(token) {
        Ok(x) => x,
        Err((user, why)) => return (user, Err(why)),
    };
    let creds = broker.cluster().scram_credentials.get(&user).cloned();
    let Some((mech, cred)) = creds.and_then(|c| {
        [ScramMechanism::Sha512, ScramMechanism::Sha256]
            .into_iter()
            .find_map(|m| c.get(&m).map(|cr| (m, cr.clone())))
    }) else {
        return (user, Err("no SCRAM credential for this user".into()));
    };
    let password = password.to_vec();
    // PBKDF2 over thousands of iterations: off the async workers.
    let ok = tokio::task::spawn_blocking(move || cred.verify_password(mech, &password))
        .await
        .unwrap_or(false);
    let verdict = if ok {
        Ok(())
    } else {
        Err("wrong password".into())
    };
    (user, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_are_split_and_checked() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".into(), &b"pw"[..])
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0").unwrap(),
            ("alice".into(), &b""[..])
        );
        for bad in [
            &b"alice"[..],
            b"\0alice",
            b"\0\0pw",
            b"x\0alice\0pw",
            b"\0a\0b\0c",
            b"\0\xff\0pw",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
    }
}
