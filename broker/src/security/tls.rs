//! TLS on the SSL and SASL_SSL listeners (rustls): the certificate chain and key
//! from PEM files, optional client certificates checked against a CA file (mTLS,
//! `ssl_client_auth` none / requested / required), and the principal of a client
//! certificate (see `principal`).
//!
//! Reloading: every accepted connection first asks [`TlsFiles::acceptor`], which
//! compares the files' modification times and sizes with those of the loaded
//! configuration and rebuilds it when one changed. New connections therefore get a
//! replaced certificate at once, without a restart; established connections keep
//! the session they negotiated. A set of files that does not load (a half-written
//! key, a key that does not match the certificate) is logged and the previous
//! configuration stays in use until the files are whole again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            _ => return None,
        })
    }
}

/// Where the TLS material is, and how clients are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// CAs of client certificates; needed unless `client_auth` is none.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// What identifies one version of the files: (modified, length) of each.
pub type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The TLS configuration of the listeners, rebuilt when its files change.
pub struct TlsFiles {
    settings: TlsSettings,
    /// ALPN protocols offered (`h2` on the gRPC listener; none on Kafka's).
    alpn: Vec<Vec<u8>>,
    current: Mutex<(Stamp, TlsAcceptor)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TlsFiles {
    /// Loads the files; an error (missing, unreadable, mismatched) fails startup.
    pub fn load(settings: TlsSettings) -> Result<Self, String> {
        Self::load_with_alpn(settings, Vec::new())
    }

    /// [`TlsFiles::load`] for a listener that negotiates its protocol by ALPN.
    pub fn load_with_alpn(settings: TlsSettings, alpn: Vec<Vec<u8>>) -> Result<Self, String> {
        let stamp = stamp(&settings);
        let mut config = build(&settings)?;
        config.alpn_protocols = alpn.clone();
        info!(certificate = %settings.certificate.display(), client_auth = ?settings.client_auth, "TLS certificate loaded");
        Ok(TlsFiles {
            settings,
            alpn,
            current: Mutex::new((stamp, TlsAcceptor::from(Arc::new(config)))),
        })
    }

    /// The acceptor for a new connection: the newest configuration whose files load.
    pub fn acceptor(&self) -> TlsAcceptor {
        let now = stamp(&self.settings);
        let mut cur = self.current.lock();
        if cur.0 != now {
            match build(&self.settings) {
                Ok(mut config) => {
                    config.alpn_protocols = self.alpn.clone();
                    info!(certificate = %self.settings.certificate.display(), "TLS files changed: certificate reloaded");
                    *cur = (now, TlsAcceptor::from(Arc::new(config)));
                }
                Err(e) => {
                    // Kept the old stamp: tried again on the next connection.
                    warn!(error = %e, "TLS files changed but do not load; still serving the previous certificate");
                }
            }
        }
        cur.1.clone()
    }
}

fn stamp(s: &TlsSettings) -> Stamp {
    let files = [Some(&s.certificate), Some(&s.key), s.client_ca.as_ref()];
    stamp_of(files.into_iter().flatten())
}

/// The (modified, length) of each file: what tells that one was replaced.
pub fn stamp_of<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> Stamp {
    files
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// A rustls server configuration from the settings' files.
fn build(s: &TlsSettings) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_chain(&s.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", s.key.display()))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (s.client_auth, &s.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("ssl_client_auth needs ssl_ca_location".into()),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in read_chain(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::Requested {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?,
            )
        }
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {}: {e}",
            s.certificate.display(),
            s.key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, cn: &str) -> TlsSettings {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
        TlsSettings {
            certificate: dir.join("c.pem"),
            key: dir.join("k.pem"),
            client_ca: None,
            client_auth: ClientAuth::None,
        }
    }

    #[test]
    fn changed_files_are_reloaded_and_broken_ones_keep_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let s = write_pair(dir.path(), "one");
        let files = TlsFiles::load(s.clone()).unwrap();
        let first = files.acceptor();
        // Unchanged files: the same configuration.
        assert!(Arc::ptr_eq(first.config(), files.acceptor().config()));
        // A key that does not belong to the certificate: kept the old one.
        let other = tempfile::tempdir().unwrap();
        write_pair(other.path(), "two");
        std::fs::copy(other.path().join("k.pem"), &s.key).unwrap();
        assert!(Arc::ptr_eq(first.config(), files.acceptor().config()));
        // Both replaced: a new configuration.
        std::fs::copy(other.path().join("c.pem"), &s.certificate).unwrap();
        assert!(!Arc::ptr_eq(first.config(), files.acceptor().config()));
    }

    #[test]
    fn missing_files_and_client_auth_without_a_ca_fail_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = write_pair(dir.path(), "one");
        s.client_auth = ClientAuth::Required;
        assert!(TlsFiles::load(s.clone())
            .unwrap_err()
            .contains("ssl_ca_location"));
        s.client_auth = ClientAuth::None;
        s.key = dir.path().join("missing.pem");
        assert!(TlsFiles::load(s).unwrap_err().contains("missing.pem"));
    }

    #[test]
    fn the_subject_is_read_as_rfc_2253() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            super::super::principal::certificate_subject(cert.der()).unwrap(),
            "CN=alice,O=Acme\\, Inc"
        );
    }
}
