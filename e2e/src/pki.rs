//! Certificates and keys for the local control plane.
//!
//! One cluster CA signs the API server's serving certificate and the client
//! certificates (admin, controller-manager); a separate front-proxy CA signs the
//! aggregation layer's proxy client certificate, as kubeadm does. The
//! service-account signing key is an ECDSA P-256 key in PKCS#8 PEM.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{Error, Result};

/// Paths of every PEM file the control plane needs, all inside one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub controller_manager_cert: PathBuf,
    pub controller_manager_key: PathBuf,
    pub front_proxy_ca_cert: PathBuf,
    pub proxy_client_cert: PathBuf,
    pub proxy_client_key: PathBuf,
    pub service_account_key: PathBuf,
    /// Public half of the service-account key (the API server verifies with it).
    pub service_account_pub: PathBuf,
}

/// CN the API server accepts on requests proxied by the aggregation layer.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(cn: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(pki_err)?;
        Ok(Ca { params, key })
    }

    fn cert_pem(&self) -> Result<String> {
        Ok(self.params.self_signed(&self.key).map_err(pki_err)?.pem())
    }

    /// Signs a leaf certificate; returns (cert PEM, key PEM).
    fn sign(
        &self,
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String)> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).map_err(pki_err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(pki_err)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(pki_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn pki_err(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

impl Pki {
    /// Generates a fresh PKI into `dir` (created if missing).
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ca = Ca::new("strata-e2e-ca")?;
        let front_proxy_ca = Ca::new("strata-e2e-front-proxy-ca")?;

        let (serving_cert, serving_key) = ca.sign(
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "10.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (admin_cert, admin_key) = ca.sign(
            "admin",
            &["system:masters"],
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let (kcm_cert, kcm_key) = ca.sign(
            "system:kube-controller-manager",
            &[],
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let (proxy_cert, proxy_key) = front_proxy_ca.sign(
            FRONT_PROXY_CLIENT_CN,
            &[],
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa_key = KeyPair::generate().map_err(pki_err)?;

        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_cert: write(dir, "ca.crt", &ca.cert_pem()?)?,
            ca_key: write(dir, "ca.key", &ca.key.serialize_pem())?,
            serving_cert: write(dir, "apiserver.crt", &serving_cert)?,
            serving_key: write(dir, "apiserver.key", &serving_key)?,
            admin_cert: write(dir, "admin.crt", &admin_cert)?,
            admin_key: write(dir, "admin.key", &admin_key)?,
            controller_manager_cert: write(dir, "controller-manager.crt", &kcm_cert)?,
            controller_manager_key: write(dir, "controller-manager.key", &kcm_key)?,
            front_proxy_ca_cert: write(dir, "front-proxy-ca.crt", &front_proxy_ca.cert_pem()?)?,
            proxy_client_cert: write(dir, "front-proxy-client.crt", &proxy_cert)?,
            proxy_client_key: write(dir, "front-proxy-client.key", &proxy_key)?,
            service_account_key: write(dir, "sa.key", &sa_key.serialize_pem())?,
            service_account_pub: write(dir, "sa.pub", &sa_key.public_key_pem())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_file_as_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        for p in [
            &pki.ca_cert,
            &pki.serving_cert,
            &pki.admin_cert,
            &pki.proxy_client_cert,
        ] {
            let s = std::fs::read_to_string(p).unwrap();
            assert!(
                s.starts_with("-----BEGIN CERTIFICATE-----"),
                "{}",
                p.display()
            );
        }
        let key = std::fs::read_to_string(&pki.service_account_key).unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }
}
