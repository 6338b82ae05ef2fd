//! The whole environment in one guard: control plane + process kubelet +
//! (optionally) S3, in one working directory. Dropping [`Env`] kills every
//! process it started, also when a test panics.

use std::path::{Path, PathBuf};

use kube::Client;

use crate::binaries::Binaries;
use crate::controlplane::ControlPlane;
use crate::kubelet::plan::ApiAccess;
use crate::kubelet::{ImageMap, Kubelet, KubeletConfig};
use crate::s3::{S3Info, S3Server};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct EnvConfig {
    pub bins: Binaries,
    /// image → program for the process kubelet.
    pub images: ImageMap,
    /// Start SeaweedFS and create this bucket.
    pub s3_bucket: Option<String>,
    /// Working directory; a fresh temp dir when None.
    pub dir: Option<PathBuf>,
    /// Keep a temp working directory after teardown (for debugging); also `STRATA_E2E_KEEP=1`.
    pub keep_dir: bool,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            bins: Binaries::from_env(),
            images: ImageMap::new(),
            s3_bucket: None,
            dir: None,
            keep_dir: std::env::var("STRATA_E2E_KEEP").is_ok_and(|v| v == "1"),
        }
    }
}

/// A running environment. Field order is teardown order.
pub struct Env {
    kubelet: Option<Kubelet>,
    pub s3: Option<S3Server>,
    pub control_plane: ControlPlane,
    pub client: Client,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Env {
    pub async fn start(config: EnvConfig) -> Result<Env> {
        let mut needed = vec!["etcd", "kube-apiserver", "kube-controller-manager"];
        if config.s3_bucket.is_some() {
            needed.push("weed");
        }
        let missing: Vec<&str> = config
            .bins
            .missing()
            .into_iter()
            .filter(|m| needed.contains(m))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingBinary {
                name: missing.join(", "),
                path: config.bins.dir.clone(),
                dir: config.bins.dir.clone(),
            });
        }
        let (temp, dir) = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("strata-e2e-")
                    .tempdir()
                    .map_err(|e| Error::io("creating temp dir", e))?;
                let path = t.path().to_path_buf();
                if config.keep_dir {
                    (None, t.keep())
                } else {
                    (Some(t), path)
                }
            }
        };
        let control_plane = ControlPlane::start(&config.bins, &dir.join("control-plane")).await?;
        let client = control_plane.client().await?;
        let s3 = match &config.s3_bucket {
            Some(b) => Some(S3Server::start(&config.bins, &dir.join("s3"), b).await?),
            None => None,
        };
        let mut kubelet_config = KubeletConfig::new(dir.join("kubelet"), config.images.clone());
        kubelet_config.api = Some(ApiAccess {
            server: control_plane.api_url.clone(),
            ca_file: control_plane.pki.ca_cert.clone(),
        });
        kubelet_config.host_ports = [
            Some(control_plane.api_url.as_str()),
            s3.as_ref().map(|s| s.info.endpoint.as_str()),
        ]
        .into_iter()
        .flatten()
        .filter_map(url_port)
        .collect();
        let kubelet = Kubelet::start(client.clone(), kubelet_config).await?;
        Ok(Env {
            kubelet: Some(kubelet),
            s3,
            control_plane,
            client,
            dir,
            _temp: temp,
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.control_plane.kubeconfig
    }

    pub fn s3_info(&self) -> Option<&S3Info> {
        self.s3.as_ref().map(|s| &s.info)
    }

    /// Writes `env.sh` (KUBECONFIG and the S3 settings as `export` lines) into the
    /// working directory; returns its path and text.
    pub fn write_env_file(&self) -> Result<(PathBuf, String)> {
        let mut exports = format!("export KUBECONFIG={}\n", self.kubeconfig().display());
        if let Some(s3) = self.s3_info() {
            exports.push_str(&format!(
                "export AWS_ENDPOINT_URL={}\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_REGION={}\nexport STRATA_S3_BUCKET={}\n",
                s3.endpoint, s3.access_key, s3.secret_key, s3.region, s3.bucket
            ));
        }
        let path = self.dir.join("env.sh");
        std::fs::write(&path, &exports)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok((path, exports))
    }

    /// Makes a service the test runs on the host's 127.0.0.1:`port` (a trace
    /// collector, say) reachable from pods at the same address; pods live in
    /// network namespaces of their own (`kubelet::podnet`).
    pub fn expose_host_port(&self, port: u16) -> Result<()> {
        match &self.kubelet {
            Some(k) => k.expose_host_port(port),
            None => Ok(()),
        }
    }

    /// Host directory backing PVC `claim` in `namespace` (stable across pod recreation).
    pub fn pvc_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        self.dir
            .join("kubelet")
            .join("data")
            .join(namespace)
            .join(claim)
    }

    /// Directory with per-pod container logs (`<ns>_<pod>_<uid>/<container>.log`).
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.dir.join("kubelet").join("logs")
    }

    /// Fails if a control-plane component or the S3 server died.
    pub fn check_alive(&mut self) -> Result<()> {
        self.control_plane.check_alive()?;
        if let Some(s3) = self.s3.as_mut() {
            s3.check_alive()?;
        }
        Ok(())
    }

    /// Graceful teardown: pods get SIGTERM first. Dropping also tears down, harder.
    pub async fn shutdown(mut self) {
        if let Some(k) = self.kubelet.take() {
            k.shutdown().await;
        }
    }
}

/// Default images: the workspace's own binaries (when built) under their short
/// names and the image names the chart and `manifests/` use, python3, and kcat
/// and sh from the host for client pods (what `strata-e2e up` runs with).
pub fn default_images() -> ImageMap {
    let mut m = ImageMap::new();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("debug");
    let target = target.canonicalize().unwrap_or(target);
    for bin in ["strata-broker", "strata-operator"] {
        let p = target.join(bin);
        if p.exists() {
            m.insert(format!("ghcr.io/strata-dev/{bin}"), p.clone());
            m.insert(bin.to_string(), p);
        }
    }
    for (image, candidates) in [
        ("kcat", &["/usr/bin/kcat", "/usr/local/bin/kcat"][..]),
        // the image manifests/consumer-deployment.yaml names
        (
            "edenhill/kcat",
            &["/usr/bin/kcat", "/usr/local/bin/kcat"][..],
        ),
        ("sh", &["/bin/sh"][..]),
    ] {
        if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
            m.insert(image.to_string(), p);
        }
    }
    m.extend(crate::testing::python_images());
    m
}

/// The port of `scheme://host:port[/…]`.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_port_reads_the_authority() {
        assert_eq!(super::url_port("https://127.0.0.1:6443"), Some(6443));
        assert_eq!(super::url_port("http://127.0.0.1:8333/bucket"), Some(8333));
        assert_eq!(super::url_port("http://example"), None);
    }
}
