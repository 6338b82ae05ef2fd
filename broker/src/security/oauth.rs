//! SASL OAUTHBEARER (RFC 7628, KIP-255/KIP-768): the client sends a JWT, the
//! broker checks it against the keys of a JWKS and takes the principal from a
//! claim. Pure parts (the client message, the JWT and its claims) plus the key
//! set, loaded from a file or an `http://` or `https://` URL and reloaded when it is older than
//! its refresh interval or a token names a key it does not hold (at most once a
//! second).
//!
//! Checked: the signature (RS256, RS384, RS512 or ES256; `alg: none` and
//! anything else refused), `exp` (required), `nbf` and `iat` (not in the future),
//! each with the configured clock skew, `iss` when an issuer is expected, `aud`
//! (a string or a list) when audiences are expected, and the principal claim
//! (`sub` unless configured otherwise), which must be a non-empty string.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::Value;

/// Largest JWKS document read.
const MAX_JWKS: usize = 1 << 20;
/// Least time between two loads of the key set.
const MIN_RELOAD: Duration = Duration::from_secs(1);
/// How long a JWKS fetch over HTTP may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The JWT of an OAUTHBEARER client-first message
/// (`gs2-header \x01 auth=Bearer <token> \x01 [key=value \x01]* \x01`).
pub fn parse_client_message(msg: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(msg).map_err(|_| "the message is not UTF-8".to_string())?;
    let (gs2, rest) = text
        .split_once('\x01')
        .ok_or_else(|| "no key/value separator".to_string())?;
    if !(gs2.starts_with("n,") || gs2.starts_with("y,")) || !gs2.ends_with(',') {
        return Err("invalid GS2 header".into());
    }
    let body = rest
        .strip_suffix("\x01\x01")
        .or_else(|| (rest == "\x01").then_some(""))
        .ok_or_else(|| "the message does not end with two separators".to_string())?;
    let mut token = None;
    for kv in body.split('\x01') {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| "a key/value pair without =".to_string())?;
        if k == "auth" {
            if token.is_some() {
                return Err("two auth values".into());
            }
            let t = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or_else(|| "auth is not a Bearer token".to_string())?;
            token = Some(t.trim());
        } else if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err("an invalid extension key".into());
        }
    }
    token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "no auth=Bearer value".into())
}

/// What an accepted token gives: the principal's name and when the token expires.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub name: String,
    pub expires: SystemTime,
}

/// The checks of a token's claims.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub sub_claim: String,
    pub skew: Duration,
}

/// A verification key of the JWKS.
#[derive(Debug, Clone)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed P-256 point (0x04 || x || y).
    P256(Vec<u8>),
}

/// The keys of a JWKS document by `kid` (keys without one under "").
pub fn parse_jwks(doc: &[u8]) -> Result<BTreeMap<String, KeyEntry>, String> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "JWKS has no keys array".to_string())?;
    let mut out = BTreeMap::new();
    for k in keys {
        let field = |name: &str| -> Option<Vec<u8>> {
            B64URL
                .decode(k.get(name)?.as_str()?.trim_end_matches('='))
                .ok()
        };
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let key = match k.get("kty").and_then(Value::as_str) {
            Some("RSA") => match (field("n"), field("e")) {
                (Some(n), Some(e)) => Key::Rsa { n, e },
                _ => continue,
            },
            Some("EC") if k.get("crv").and_then(Value::as_str) == Some("P-256") => {
                match (field("x"), field("y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        let mut p = vec![4u8];
                        p.extend_from_slice(&x);
                        p.extend_from_slice(&y);
                        Key::P256(p)
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        let kid = k
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let alg = k.get("alg").and_then(Value::as_str).map(String::from);
        out.insert(kid, KeyEntry { key, alg });
    }
    Ok(out)
}

/// A key and the algorithm the JWKS pins it to, if any.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    key: Key,
    alg: Option<String>,
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, String> {
    B64URL
        .decode(part)
        .map_err(|_| format!("the token's {what} is not base64url"))
}

fn seconds(v: &Value, claim: &str) -> Result<Option<u64>, String> {
    match v.get(claim) {
        None => Ok(None),
        Some(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|f| Some(f as u64))
            .ok_or_else(|| format!("claim {claim} is not a number of seconds")),
    }
}

/// The header's `kid` of a compact JWS, to pick its key.
pub fn key_id(jwt: &str) -> Result<String, String> {
    let header = jwt.split('.').next().unwrap_or("");
    let h: Value = serde_json::from_slice(&decode_part(header, "header")?)
        .map_err(|_| "the token's header is not JSON".to_string())?;
    Ok(h.get("kid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

/// Checks a compact JWS against `keys` and `exp` at `now`.
pub fn verify(
    jwt: &str,
    keys: &BTreeMap<String, KeyEntry>,
    exp: &Expectations,
    now: SystemTime,
) -> Result<Accepted, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, sig] = parts[..] else {
        return Err("the token is not a compact JWS (three parts)".into());
    };
    let h: Value = serde_json::from_slice(&decode_part(header, "header")?)
        .map_err(|_| "the token's header is not JSON".to_string())?;
    let alg = h.get("alg").and_then(Value::as_str).unwrap_or("");
    let kid = h.get("kid").and_then(Value::as_str).unwrap_or("");
    let entry = keys
        .get(kid)
        .ok_or_else(|| format!("no key {kid:?} in the JWKS"))?;
    if entry.alg.as_deref().is_some_and(|a| a != alg) {
        return Err(format!("key {kid:?} is not for {alg}"));
    }
    let signature = decode_part(sig, "signature")?;
    let signed = &jwt.as_bytes()[..header.len() + 1 + payload.len()];
    let ok = match (&entry.key, alg) {
        (Key::Rsa { n, e }, "RS256" | "RS384" | "RS512") => {
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, signed, &signature)
                .is_ok()
        }
        (Key::P256(point), "ES256") => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, &signature)
                .is_ok()
        }
        _ => return Err(format!("algorithm {alg:?} is not accepted for key {kid:?}")),
    };
    if !ok {
        return Err("the token's signature does not verify".into());
    }
    let claims: Value = serde_json::from_slice(&decode_part(payload, "payload")?)
        .map_err(|_| "the token's payload is not JSON".to_string())?;
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?
        .as_secs();
    let skew = exp.skew.as_secs();
    let expires = seconds(&claims, "exp")?.ok_or_else(|| "the token has no exp".to_string())?;
    if expires + skew <= now_s {
        return Err("the token expired".into());
    }
    for claim in ["nbf", "iat"] {
        if seconds(&claims, claim)?.is_some_and(|t| t > now_s + skew) {
            return Err(format!("the token's {claim} is in the future"));
        }
    }
    if let Some(want) = &exp.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
            return Err("the token's issuer is not the expected one".into());
        }
    }
    if !exp.audiences.is_empty() {
        let aud: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| exp.audiences.iter().any(|w| w == a)) {
            return Err("the token is not for an expected audience".into());
        }
    }
    let name = claims
        .get(&exp.sub_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the token has no {} claim", exp.sub_claim))?;
    Ok(Accepted {
        name: name.to_string(),
        expires: SystemTime::UNIX_EPOCH + Duration::from_secs(expires),
    })
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    File(PathBuf),
    /// `host:port` and path of an `http://` or (`https`) `https://` URL.
    Http {
        https: bool,
        authority: String,
        path: String,
    },
}

impl JwksSource {
    /// `file:///path`, a path, `http://host[:port]/path` or `https://host[:port]/path`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        for (scheme, https, port) in [("http://", false, 80), ("https://", true, 443)] {
            let Some(rest) = s.strip_prefix(scheme) else {
                continue;
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if authority.is_empty() {
                return Err("the URL has no host".into());
            }
            let authority = if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:{port}")
            };
            return Ok(JwksSource::Http {
                https,
                authority,
                path: path.to_string(),
            });
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.is_empty() {
            return Err("empty".into());
        }
        Ok(JwksSource::File(PathBuf::from(path)))
    }

    /// Whether the JWKS is fetched over TLS (and needs [`jwks_tls`]).
    pub fn https(&self) -> bool {
        matches!(self, JwksSource::Http { https: true, .. })
    }

    async fn fetch(&self, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Vec<u8>, String> {
        let (https, authority, path) = match self {
            JwksSource::File(p) => {
                return tokio::fs::read(p)
                    .await
                    .map_err(|e| format!("reading {}: {e}", p.display()))
            }
            JwksSource::Http {
                https,
                authority,
                path,
            } => (*https, authority, path),
        };
        let scheme = if https { "https" } else { "http" };
        let what = format!("GET {scheme}://{authority}{path}");
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h);
        let get = async {
            let tcp = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            if !https {
                return http_get(tcp, &what, host, path).await;
            }
            let cfg = tls.ok_or_else(|| format!("{what}: no TLS settings"))?;
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("{what}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{what}: TLS: {e}"))?;
            http_get(stream, &what, host, path).await
        };
        tokio::time::timeout(FETCH_TIMEOUT, get)
            .await
            .map_err(|_| format!("{what} timed out"))?
    }
}

/// The TLS client settings of an `https://` JWKS: the CAs of `ca_location` (PEM),
/// or the system's trusted roots when it is empty.
pub fn jwks_tls(ca_location: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_location.trim().is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err("no system CA certificates found: set a CA file".into());
        }
    } else {
        for c in super::tls::read_chain(std::path::Path::new(ca_location.trim()))? {
            roots
                .add(c)
                .map_err(|e| format!("bad CA certificate in {ca_location}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// One HTTP/1.0 GET over `s`; the body of a 200 answer. A TLS server that closes
/// without close_notify (common for HTTP/1.0) ends the body like a plain close;
/// a Content-Length, when sent, must then be met.
async fn http_get<S>(mut s: S, what: &str, host: &str, path: &str) -> Result<Vec<u8>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let mut buf = Vec::new();
    let limit = (MAX_JWKS + 16 * 1024) as u64;
    match (&mut s).take(limit).read_to_end(&mut buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("{what}: {e}")),
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{what}: no HTTP header"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{what}: HTTP status {status}"));
    }
    let body = buf[end + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if length.is_some_and(|n| n != body.len()) {
        return Err(format!("{what}: the body was cut short"));
    }
    Ok(body)
}

struct Loaded {
    keys: BTreeMap<String, KeyEntry>,
    at: Instant,
}

/// The key set and the last load attempt.
#[derive(Default)]
struct KeyState {
    loaded: Option<Loaded>,
    /// When a load was last tried, whatever came of it.
    attempted: Option<Instant>,
    /// Why the last load failed, while no load has succeeded since.
    failure: Option<String>,
}

/// The validator every OAUTHBEARER session of the broker shares.
pub struct OAuthValidator {
    source: JwksSource,
    /// TLS settings of an `https://` source.
    tls: Option<Arc<rustls::ClientConfig>>,
    refresh: Duration,
    pub expectations: Expectations,
    state: Mutex<KeyState>,
    /// Held while the JWKS is fetched: logins that arrive meanwhile wait for that
    /// fetch instead of starting their own.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OAuthValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthValidator")
            .field("source", &self.source)
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl OAuthValidator {
    pub fn new(
        source: JwksSource,
        tls: Option<Arc<rustls::ClientConfig>>,
        refresh: Duration,
        expectations: Expectations,
    ) -> Self {
        OAuthValidator {
            source,
            tls,
            refresh,
            expectations,
            state: Mutex::new(KeyState::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys held (if any), and whether they should be loaded again for `kid`:
    /// none loaded, older than the refresh interval, or without `kid`.
    fn held(&self, kid: &str) -> (Option<BTreeMap<String, KeyEntry>>, bool) {
        let st = self.state();
        match &st.loaded {
            Some(l) => (
                Some(l.keys.clone()),
                l.at.elapsed() >= self.refresh || !l.keys.contains_key(kid),
            ),
            None => (None, true),
        }
    }

    /// What the last attempt left: the keys held, or why there are none.
    fn last_outcome(&self) -> Result<BTreeMap<String, KeyEntry>, String> {
        let st = self.state();
        match (&st.loaded, &st.failure) {
            (Some(l), _) => Ok(l.keys.clone()),
            (None, Some(why)) => Err(why.clone()),
            (None, None) => Err("the JWKS is not loaded".into()),
        }
    }

    /// Loads the key set again, at most once a second whatever the outcome (so
    /// neither unknown `kid`s nor a failing identity provider make every login
    /// fetch), one fetch at a time; a failure keeps the keys loaded before.
    async fn refreshed(&self) -> Result<BTreeMap<String, KeyEntry>, String> {
        let _one = self.fetching.lock().await;
        if self
            .state()
            .attempted
            .is_some_and(|t| t.elapsed() < MIN_RELOAD)
        {
            return self.last_outcome();
        }
        self.state().attempted = Some(Instant::now());
        let fetched = async {
            let doc = self.source.fetch(self.tls.as_ref()).await?;
            if doc.len() > MAX_JWKS {
                return Err(format!("the JWKS is larger than {MAX_JWKS} bytes"));
            }
            parse_jwks(&doc)
        }
        .await;
        let mut st = self.state();
        match fetched {
            Ok(keys) => {
                tracing::info!(source = ?self.source, keys = keys.len(), "OAUTHBEARER JWKS loaded");
                st.loaded = Some(Loaded {
                    keys: keys.clone(),
                    at: Instant::now(),
                });
                st.failure = None;
                Ok(keys)
            }
            Err(e) => {
                st.failure = Some(e.clone());
                match &st.loaded {
                    Some(l) => {
                        tracing::warn!(error = %e, "OAUTHBEARER JWKS reload failed; keeping the keys loaded before");
                        Ok(l.keys.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Checks `jwt`, loading the keys first when none are loaded, they are older
    /// than the refresh interval, or the token names a key not among them.
    pub async fn validate(&self, jwt: &str) -> Result<Accepted, String> {
        let kid = key_id(jwt)?;
        let keys = match self.held(&kid) {
            (Some(keys), false) => keys,
            _ => self.refreshed().await?,
        };
        verify(jwt, &keys, &self.expectations, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn b64(v: &[u8]) -> String {
        B64URL.encode(v)
    }

    struct Signer {
        pair: EcdsaKeyPair,
        kid: &'static str,
    }

    impl Signer {
        fn new(kid: &'static str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .expect("pair");
            Signer { pair, kid }
        }

        fn jwk(&self) -> Value {
            let p = self.pair.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                "x": b64(&p[1..33]), "y": b64(&p[33..65])})
        }

        fn token(&self, alg: &str, claims: Value) -> String {
            let header = b64(
                serde_json::json!({"alg": alg, "kid": self.kid, "typ": "JWT"})
                    .to_string()
                    .as_bytes(),
            );
            let payload = b64(claims.to_string().as_bytes());
            let signed = format!("{header}.{payload}");
            let sig = self
                .pair
                .sign(&SystemRandom::new(), signed.as_bytes())
                .expect("sign");
            format!("{signed}.{}", b64(sig.as_ref()))
        }
    }

    fn keys(signers: &[&Signer]) -> BTreeMap<String, KeyEntry> {
        let doc = serde_json::json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
        parse_jwks(doc.to_string().as_bytes()).expect("jwks")
    }

    fn expect() -> Expectations {
        Expectations {
            issuer: Some("https://idp.example".into()),
            audiences: vec!["strata".into()],
            sub_claim: "sub".into(),
            skew: Duration::from_secs(30),
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn claims() -> Value {
        serde_json::json!({"sub": "alice", "iss": "https://idp.example",
            "aud": ["other", "strata"], "exp": NOW + 600, "iat": NOW - 10})
    }

    #[test]
    fn a_good_token_names_its_principal_and_expiry() {
        let s = Signer::new("k1");
        let a = verify(
            &s.token("ES256", claims()),
            &keys(&[&s]),
            &expect(),
            at(NOW),
        )
        .expect("ok");
        assert_eq!(a.name, "alice");
        assert_eq!(a.expires, at(NOW + 600));
        let mut e = expect();
        e.sub_claim = "client_id".into();
        let mut c = claims();
        c["client_id"] = "svc-orders".into();
        let a = verify(&s.token("ES256", c), &keys(&[&s]), &e, at(NOW)).expect("ok");
        assert_eq!(a.name, "svc-orders");
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let s = Signer::new("k1");
        let other = Signer::new("k2");
        let k = keys(&[&s]);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            verify(&s.token("ES256", c), &k, &expect(), at(NOW)).unwrap_err()
        };
        assert!(with(&|c| c["exp"] = (NOW - 31).into()).contains("expired"));
        assert!(with(&|c| {
            c.as_object_mut().expect("obj").remove("exp");
        })
        .contains("no exp"));
        assert!(with(&|c| c["nbf"] = (NOW + 100).into()).contains("nbf"));
        assert!(with(&|c| c["iss"] = "https://evil.example".into()).contains("issuer"));
        assert!(with(&|c| c["aud"] = "elsewhere".into()).contains("audience"));
        assert!(with(&|c| c["sub"] = "".into()).contains("sub"));
        // Within the skew an expired token still passes.
        let mut c = claims();
        c["exp"] = (NOW - 10).into();
        assert!(verify(&s.token("ES256", c), &k, &expect(), at(NOW)).is_ok());
        // Signed by a key the JWKS does not hold, or under its kid.
        let foreign = other.token("ES256", claims());
        assert!(verify(&foreign, &k, &expect(), at(NOW))
            .unwrap_err()
            .contains("no key"));
        let forged = format!(
            "{}.{}",
            foreign.rsplit_once('.').expect("jws").0.replace(
                &b64(br#"{"alg":"ES256","kid":"k2","typ":"JWT"}"#),
                &b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#)
            ),
            foreign.rsplit_once('.').expect("jws").1
        );
        assert!(verify(&forged, &k, &expect(), at(NOW))
            .unwrap_err()
            .contains("signature"));
        // alg none, and an algorithm the key is not for.
        let good = s.token("ES256", claims());
        let payload = good.split('.').nth(1).expect("payload");
        let none = format!("{}.{payload}.", b64(br#"{"alg":"none","kid":"k1"}"#));
        assert!(verify(&none, &k, &expect(), at(NOW)).is_err());
        let rs = format!(
            "{}.{payload}.{}",
            b64(br#"{"alg":"RS256","kid":"k1"}"#),
            good.rsplit('.').next().expect("sig")
        );
        assert!(verify(&rs, &k, &expect(), at(NOW))
            .unwrap_err()
            .contains("RS256"));
        assert!(verify("a.b", &k, &expect(), at(NOW)).is_err());
        assert!(verify("!!.!!.!!", &k, &expect(), at(NOW)).is_err());
    }

    #[test]
    fn client_messages_are_parsed_as_rfc_7628_says() {
        assert_eq!(
            parse_client_message(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01"),
            Ok("abc.def.ghi")
        );
        assert_eq!(
            parse_client_message(b"n,a=alice,\x01host=h\x01auth=Bearer t\x01traceId=1\x01\x01"),
            Ok("t"),
            "extensions are allowed"
        );
        assert_eq!(
            parse_client_message(b"n,,\x01auth=Bearer t\x01trace_id=1\x01\x01"),
            Err("an invalid extension key".into()),
            "extension keys are letters only"
        );
        assert_eq!(
            parse_client_message(b"n,a=alice,\x01host=h\x01auth=Bearer t\x01\x01"),
            Ok("t")
        );
        for bad in [
            &b""[..],
            b"\x01",
            b"n,,auth=Bearer t\x01\x01",
            b"p=x,,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01\x01",
            b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
            b"n,,\x01\xff\x01\x01",
        ] {
            assert!(parse_client_message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jwks_sources_and_documents() {
        assert_eq!(
            JwksSource::parse("http://127.0.0.1:8080/jwks.json"),
            Ok(JwksSource::Http {
                https: false,
                authority: "127.0.0.1:8080".into(),
                path: "/jwks.json".into()
            })
        );
        let idp = JwksSource::parse("https://idp.example/keys").expect("https");
        assert_eq!(
            idp,
            JwksSource::Http {
                https: true,
                authority: "idp.example:443".into(),
                path: "/keys".into()
            }
        );
        assert!(idp.https());
        assert!(JwksSource::parse("https:///keys").is_err());
        assert_eq!(
            JwksSource::parse("file:///etc/jwks.json"),
            Ok(JwksSource::File("/etc/jwks.json".into()))
        );
        assert!(parse_jwks(b"{}").is_err());
        let k = parse_jwks(
            br#"{"keys":[{"kty":"oct","k":"x"},{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},
                {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}]}"#,
        )
        .expect("jwks");
        assert_eq!(
            k.keys().collect::<Vec<_>>(),
            vec!["r"],
            "symmetric and enc keys skipped"
        );
    }

    /// A validator of tokens signed by the keys of the JWKS file at `path`.
    fn file_validator(path: &std::path::Path) -> OAuthValidator {
        OAuthValidator::new(
            JwksSource::File(path.to_path_buf()),
            None,
            Duration::from_secs(3600),
            Expectations {
                issuer: None,
                audiences: vec![],
                sub_claim: "sub".into(),
                skew: Duration::from_secs(30),
            },
        )
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    #[tokio::test]
    async fn the_key_set_is_reloaded_for_a_new_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let a = Signer::new("a");
        let b = Signer::new("b");
        let write = |s: &[&Signer]| {
            let doc = serde_json::json!({"keys": s.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
            std::fs::write(&path, doc.to_string()).expect("write");
        };
        write(&[&a]);
        let v = file_validator(&path);
        let now = now_secs();
        let c = serde_json::json!({"sub": "bob", "exp": now + 60});
        assert_eq!(
            v.validate(&a.token("ES256", c.clone()))
                .await
                .expect("a")
                .name,
            "bob"
        );
        write(&[&a, &b]);
        tokio::time::sleep(MIN_RELOAD).await;
        assert!(
            v.validate(&b.token("ES256", c.clone())).await.is_ok(),
            "b picked up"
        );
        write(&[&b]);
        // Reloaded only when a key is unknown (or the interval passed): `a` stays.
        assert!(v.validate(&a.token("ES256", c)).await.is_ok());
    }

    #[tokio::test]
    async fn a_failing_source_is_tried_at_most_once_a_second() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let a = Signer::new("a");
        let v = file_validator(&path);
        let now = now_secs();
        let token = a.token("ES256", serde_json::json!({"sub": "bob", "exp": now + 60}));
        let first = v.validate(&token).await.unwrap_err();
        assert!(first.contains("reading"), "{first}");
        // The JWKS appears, but the next login within the second is answered with
        // the failure it just had, without reading the source again.
        let doc = serde_json::json!({"keys": [a.jwk()]});
        std::fs::write(&path, doc.to_string()).expect("write");
        assert_eq!(v.validate(&token).await.unwrap_err(), first);
        tokio::time::sleep(MIN_RELOAD).await;
        assert_eq!(v.validate(&token).await.expect("loaded").name, "bob");
    }
}
