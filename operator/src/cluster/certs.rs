//! The cluster CA and the certificates it issues, as pure functions over PEM:
//! one CA per Cluster (Secret `<cluster>-ca`), one server certificate for all
//! its brokers (Secret `<cluster>-broker-tls`, every broker's DNS name) and a
//! client certificate per TLS `User`. A certificate is renewed once less than a
//! third of its lifetime is left; brokers reload their files without a restart.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Lifetime of the CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Lifetime of broker and user certificates.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate does not parse: {0}")]
    Parse(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    // An hour back: clocks of the nodes differ a little.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + lifetime).into();
}

/// The CA's parameters: the same for a cluster every time, so its issuer can be
/// rebuilt from the stored key alone.
fn ca_params(cluster: &str, namespace: &str) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "strata");
    dn.push(
        DnType::CommonName,
        format!("{cluster}.{namespace} cluster CA"),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// A new CA for the cluster.
pub fn new_ca(cluster: &str, namespace: &str, now: SystemTime) -> Result<Pem, CertError> {
    let key = KeyPair::generate()?;
    let mut p = ca_params(cluster, namespace)?;
    validity(&mut p, now, CA_VALIDITY);
    let cert = p.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// What a leaf certificate is for.
pub enum Leaf<'a> {
    /// A broker: these DNS names.
    Server(&'a [String]),
    /// A client: this common name (its principal is `User:<cn>`).
    Client(&'a str),
}

/// A certificate for `leaf`, signed by the cluster's CA (its key PEM).
pub fn issue(
    cluster: &str,
    namespace: &str,
    ca_key: &str,
    leaf: Leaf<'_>,
    now: SystemTime,
) -> Result<Pem, CertError> {
    let ca_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::new(ca_params(cluster, namespace)?, ca_key);
    let key = KeyPair::generate()?;
    let mut p = match leaf {
        Leaf::Server(names) => {
            let mut p = CertificateParams::new(names.to_vec())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "strata");
            dn.push(DnType::CommonName, format!("{cluster}-broker"));
            p.distinguished_name = dn;
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            p
        }
        Leaf::Client(cn) => {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p
        }
    };
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut p, now, LEAF_VALIDITY);
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// `(not_before, not_after)` of the first certificate in `pem`, in seconds
/// since the epoch, and its DNS names.
pub fn inspect(pem: &str) -> Result<(i64, i64, Vec<String>), CertError> {
    let (_, doc) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = doc
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_string());
            }
        }
    }
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        names,
    ))
}

/// Whether a certificate valid from `not_before` to `not_after` (seconds since
/// the epoch) must be replaced at `now`: less than a third of its lifetime left
/// (for a one-year certificate, four months before it expires).
pub fn needs_renewal(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = not_after - not_before;
    lifetime <= 0 || not_after - now < lifetime / 3
}

/// Whether `pem` is a certificate that can stay: it parses, is not due for
/// renewal, and names every one of `names`.
pub fn still_good(pem: &str, names: &[String], now: SystemTime) -> bool {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match inspect(pem) {
        Ok((nb, na, have)) => !needs_renewal(nb, na, now) && names.iter().all(|n| have.contains(n)),
        Err(_) => false,
    }
}

/// The DNS names of a cluster's brokers and of its bootstrap Service.
pub fn broker_names(cluster: &str, namespace: &str) -> Vec<String> {
    let names = super::Names::new(cluster);
    let mut out = Vec::new();
    for suffix in ["svc.cluster.local", "svc"] {
        out.push(format!(
            "*.{}.{namespace}.{suffix}",
            names.headless_service()
        ));
        out.push(format!(
            "{}.{namespace}.{suffix}",
            names.bootstrap_service()
        ));
    }
    out.push(format!("{}.{namespace}", names.bootstrap_service()));
    out.push(names.bootstrap_service());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_and_client_certificates_chain_to_the_cluster_ca() {
        let now = SystemTime::now();
        let ca = new_ca("demo", "prod", now).expect("ca");
        let names = broker_names("demo", "prod");
        assert!(names.contains(&"*.demo-brokers.prod.svc.cluster.local".to_string()));
        let server = issue("demo", "prod", &ca.key, Leaf::Server(&names), now).expect("server");
        let client = issue("demo", "prod", &ca.key, Leaf::Client("alice"), now).expect("client");
        let der = |pem: &str| {
            let (_, d) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
            d.contents
        };
        let ca_der = der(&ca.cert);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
        for leaf in [&server.cert, &client.cert] {
            let leaf_der = der(leaf);
            let (_, c) = x509_parser::parse_x509_certificate(&leaf_der).expect("leaf");
            assert_eq!(c.issuer(), ca_cert.subject(), "issued by the CA");
            c.verify_signature(Some(ca_cert.public_key()))
                .expect("signed by the CA's key");
        }
        let client_der = der(&client.cert);
        let (_, c) = x509_parser::parse_x509_certificate(&client_der).expect("client");
        assert_eq!(c.subject().to_string(), "CN=alice");
        assert!(still_good(&server.cert, &names, now));
        assert!(
            !still_good(&server.cert, &["other.example".to_string()], now),
            "a certificate without a needed name is replaced"
        );
        let later = now + Duration::from_secs(300 * 24 * 3600);
        assert!(
            !still_good(&server.cert, &names, later),
            "renewed before expiry"
        );
        assert!(!still_good("not a certificate", &names, now));
    }

    #[test]
    fn renewal_starts_with_a_third_of_the_lifetime_left() {
        let year = 365 * 86_400;
        assert!(!needs_renewal(0, year, 0));
        assert!(!needs_renewal(0, year, year / 2));
        assert!(needs_renewal(0, year, year - year / 3 + 1));
        assert!(needs_renewal(0, year, year + 1), "expired");
        assert!(needs_renewal(5, 5, 0), "an empty lifetime");
    }
}
