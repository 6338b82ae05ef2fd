//! TLS for the External metrics server. The serving certificate is
//! self-signed at startup (the chart's APIService sets
//! `insecureSkipTLSVerify`); clients must present a certificate signed by the
//! aggregation layer's front-proxy CA, which kube-apiserver publishes in
//! `kube-system/extension-apiserver-authentication`. kube-apiserver has
//! already authenticated and authorized the original caller before it
//! proxies, so that certificate is what proves a request came through it;
//! like kube-apiserver's own request-header authenticator, its common name
//! must also be one of `requestheader-allowed-names` when that list is set.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where kube-apiserver publishes its request-header (front-proxy) client CA.
pub const AUTH_CONFIGMAP_NAMESPACE: &str = "kube-system";
pub const AUTH_CONFIGMAP: &str = "extension-apiserver-authentication";
pub const CLIENT_CA_KEY: &str = "requestheader-client-ca-file";
pub const ALLOWED_NAMES_KEY: &str = "requestheader-allowed-names";

/// Who may call: certificates signed by `ca`, with a common name in
/// `allowed_names` (any name when empty).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub ca_pem: String,
    pub allowed_names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the serving certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
    #[error("reading {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP}: {0}")]
    Kube(#[from] kube::Error),
}

/// A self-signed serving certificate for `names` and its key.
pub fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![ck.cert.der().clone()], key))
}

/// The certificates of a PEM bundle (at least one).
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::ClientCa(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::ClientCa("no certificate in the bundle".into()));
    }
    Ok(certs)
}

/// The front-proxy CA bundle and allowed names from
/// `kube-system/extension-apiserver-authentication`.
pub async fn requestheader_auth(client: &Client) -> Result<ClientAuth, TlsError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), AUTH_CONFIGMAP_NAMESPACE);
    let mut data = api.get(AUTH_CONFIGMAP).await?.data.unwrap_or_default();
    let ca_pem = data
        .remove(CLIENT_CA_KEY)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            TlsError::ClientCa(format!(
                "{AUTH_CONFIGMAP} has no {CLIENT_CA_KEY}: kube-apiserver runs without the \
                 aggregation layer (--requestheader-client-ca-file)"
            ))
        })?;
    let allowed_names = parse_allowed_names(data.get(ALLOWED_NAMES_KEY).map(String::as_str))?;
    Ok(ClientAuth {
        ca_pem,
        allowed_names,
    })
}

/// `requestheader-allowed-names` is a JSON list of strings (absent or empty: any name).
pub fn parse_allowed_names(value: Option<&str>) -> Result<Vec<String>, TlsError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_str(v)
            .map_err(|e| TlsError::ClientCa(format!("{ALLOWED_NAMES_KEY} `{v}`: {e}"))),
    }
}

/// Whether the client certificate's common name is allowed.
pub fn client_name_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let allowed = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| allowed.iter().any(|a| a == cn));
    allowed
}

/// Server config requiring client certificates signed by `client_ca`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Vec<CertificateDer<'static>>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in client_ca {
        roots.add(ca)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_server_accepts_a_client_ca_bundle() {
        let (chain, key) = self_signed(&["localhost".into()]).expect("cert");
        let ca =
            rcgen::generate_simple_self_signed(vec!["front-proxy-ca".to_string()]).expect("ca");
        let bundle = parse_ca_bundle(&ca.cert.pem()).expect("bundle");
        assert_eq!(bundle.len(), 1);
        server_config(chain, key, bundle).expect("config");
        assert!(parse_ca_bundle("not pem").is_err());
    }

    fn cert_with_cn(cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn only_allowed_common_names_pass_when_the_list_is_set() {
        let names = parse_allowed_names(Some("[\"front-proxy-client\"]")).expect("names");
        assert_eq!(names, vec!["front-proxy-client".to_string()]);
        assert!(client_name_allowed(
            &cert_with_cn("front-proxy-client"),
            &names
        ));
        assert!(!client_name_allowed(&cert_with_cn("someone-else"), &names));
        // No list: any certificate the CA signed.
        assert!(parse_allowed_names(None).expect("none").is_empty());
        assert!(parse_allowed_names(Some("")).expect("empty").is_empty());
        assert!(client_name_allowed(&cert_with_cn("someone-else"), &[]));
        assert!(parse_allowed_names(Some("front-proxy-client")).is_err());
    }
}
