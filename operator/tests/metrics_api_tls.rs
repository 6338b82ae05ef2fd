//! The External metrics server answers only clients that present a
//! certificate signed by the configured front-proxy CA (as kube-apiserver's
//! aggregation layer does), over the real HTTPS listener; no cluster needed.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use strata_operator::admin::AdminChannels;
use strata_operator::metrics::Metrics;
use strata_operator::metrics_api::{serve, MetricsApiOptions};

/// The APIService skips verifying the operator's self-signed certificate; so does this client.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            params,
            key: KeyPair::generate().expect("key"),
        }
    }

    fn pem(&self) -> String {
        self.params.self_signed(&self.key).expect("ca cert").pem()
    }

    fn client(&self, cn: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .expect("client cert");
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// GET `path` over TLS; None when the server refuses the connection.
async fn get(
    port: u16,
    identity: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    path: &str,
) -> Option<String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert], key)
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    // With TLS 1.3 a refused client certificate surfaces on the first read or write.
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn only_the_aggregators_client_certificate_is_served() {
    // A workspace build links two rustls crypto providers; pick one, as main() does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let front_proxy = Ca::new("front-proxy-ca");
    let other = Ca::new("some-other-ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("front-proxy-ca.crt");
    std::fs::write(&ca_file, front_proxy.pem()).expect("write CA");
    // A client for an API server nobody listens on: discovery needs none, metric reads fail.
    let kube = kube::Client::try_from(kube::Config::new(
        "https://127.0.0.1:1".parse().expect("url"),
    ))
    .expect("client");
    let port = strata_e2e::net::free_port().expect("port");
    let metrics = Metrics::new().expect("metrics");
    let server = tokio::spawn(serve(
        kube,
        metrics.clone(),
        AdminChannels::new(metrics),
        MetricsApiOptions {
            listen: format!("127.0.0.1:{port}").parse().expect("addr"),
            client_ca_file: Some(ca_file),
        },
    ));
    let discovery = "/apis/external.metrics.k8s.io/v1beta1";
    let mut answer = None;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            answer = get(
                port,
                Some(front_proxy.client("front-proxy-client")),
                discovery,
            )
            .await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the aggregator's certificate is served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"strata_consumergroup_lag\""), "{answer}");

    assert_eq!(
        get(port, None, discovery).await,
        None,
        "no client certificate"
    );
    assert_eq!(
        get(port, Some(other.client("front-proxy-client")), discovery).await,
        None,
        "a certificate from another CA"
    );

    // The metric itself needs the API server: a Kubernetes Status error, not a hang.
    let answer = get(
        port,
        Some(front_proxy.client("front-proxy-client")),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/strata_consumergroup_lag?labelSelector=strata.dev%2Fconsumergroup%3Dorders",
    )
    .await
    .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"kind\":\"Status\""), "{answer}");
    let answer = get(
        port,
        Some(front_proxy.client("front-proxy-client")),
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/other_metric",
    )
    .await
    .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    server.abort();
}
