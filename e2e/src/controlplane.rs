//! The local control plane: etcd, kube-apiserver and kube-controller-manager on
//! 127.0.0.1 with free ports, generated certificates and an admin kubeconfig.
//!
//! The API server flags follow envtest's, plus the aggregation-layer flags
//! (requestheader CA, proxy client certificate) so an APIService can be served,
//! and `--endpoint-reconciler-type=none` because there is no real network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::binaries::Binaries;
use crate::net::{self, LOCALHOST};
use crate::pki::{Pki, FRONT_PROXY_CLIENT_CN};
use crate::process::ManagedProcess;
use crate::{Error, Result};

/// Service CIDR handed to the API server (ClusterIPs are allocated but route nowhere).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// How long to wait for each component to become healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// A running control plane. Dropping it stops every process (controller-manager
/// first, etcd last).
pub struct ControlPlane {
    controller_manager: ManagedProcess,
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    pub dir: PathBuf,
    pub pki: Pki,
    pub kubeconfig: PathBuf,
    pub api_url: String,
    pub etcd_url: String,
}

impl ControlPlane {
    /// Starts everything under `dir` (must exist) and waits for `/readyz`.
    pub async fn start(bins: &Binaries, dir: &Path) -> Result<ControlPlane> {
        let etcd_bin = bins.path("etcd")?;
        let apiserver_bin = bins.path("kube-apiserver")?;
        let kcm_bin = bins.path("kube-controller-manager")?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;
        let pki = Pki::generate(&dir.join("pki"))?;

        // --- etcd ---
        let etcd_port = net::free_port()?;
        let peer_port = net::free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=strata-e2e".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=strata-e2e={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut etcd = ManagedProcess::spawn(
            "etcd",
            &etcd_bin,
            &etcd_args,
            &logs.join("etcd.log"),
            Duration::from_secs(5),
        )?;
        let etcd_addr = SocketAddr::new(LOCALHOST, etcd_port);
        wait_until("etcd /health", &mut etcd, || async {
            net::http_get_status(etcd_addr, "/health", Duration::from_secs(2)).await == Some(200)
        })
        .await?;

        // --- kube-apiserver ---
        let api_port = net::free_port()?;
        let api_url = format!("https://127.0.0.1:{api_port}");
        let p = |p: &PathBuf| p.display().to_string();
        let api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--tls-cert-file={}", p(&pki.serving_cert)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
            format!("--client-ca-file={}", p(&pki.ca_cert)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=RBAC".to_string(),
            "--allow-privileged=true".to_string(),
            format!("--service-account-issuer={api_url}"),
            format!("--service-account-key-file={}", p(&pki.service_account_pub)),
            format!(
                "--service-account-signing-key-file={}",
                p(&pki.service_account_key)
            ),
            format!(
                "--requestheader-client-ca-file={}",
                p(&pki.front_proxy_ca_cert)
            ),
            format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT_CN}"),
            "--requestheader-username-headers=X-Remote-User".to_string(),
            "--requestheader-group-headers=X-Remote-Group".to_string(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
            format!("--proxy-client-cert-file={}", p(&pki.proxy_client_cert)),
            format!("--proxy-client-key-file={}", p(&pki.proxy_client_key)),
            "--endpoint-reconciler-type=none".to_string(),
            // The aggregation layer proxies to an APIService's endpoint (pod) address,
            // not its ClusterIP: there is no kube-proxy here to route virtual IPs.
            "--enable-aggregator-routing=true".to_string(),
            "--enable-priority-and-fairness=false".to_string(),
            "--profiling=false".to_string(),
        ];
        let mut apiserver = ManagedProcess::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &api_args,
            &logs.join("kube-apiserver.log"),
            Duration::from_secs(3),
        )?;

        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &api_url,
            &pki.ca_cert,
            &pki.admin_cert,
            &pki.admin_key,
            "admin",
        )?;
        let client = client_from_kubeconfig(&kubeconfig).await?;
        let api_addr = SocketAddr::new(LOCALHOST, api_port);
        wait_until("kube-apiserver /readyz", &mut apiserver, || async {
            // Probe the port first so the client does not log connection errors.
            net::tcp_open(api_addr, Duration::from_secs(1)).await && readyz(&client).await
        })
        .await?;

        // --- kube-controller-manager ---
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &kcm_kubeconfig,
            &api_url,
            &pki.ca_cert,
            &pki.controller_manager_cert,
            &pki.controller_manager_key,
            "system:kube-controller-manager",
        )?;
        let kcm_args = vec![
            format!("--kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--authentication-kubeconfig={}", p(&kcm_kubeconfig)),
            format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", net::free_port()?),
            format!("--cert-dir={}", dir.join("kcm-certs").display()),
            format!(
                "--service-account-private-key-file={}",
                p(&pki.service_account_key)
            ),
            format!("--root-ca-file={}", p(&pki.ca_cert)),
            format!("--cluster-signing-cert-file={}", p(&pki.ca_cert)),
            format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
            "--use-service-account-credentials=true".to_string(),
            "--leader-elect=false".to_string(),
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller".to_string(),
            "--profiling=false".to_string(),
        ];
        let mut controller_manager = ManagedProcess::spawn(
            "kube-controller-manager",
            &kcm_bin,
            &kcm_args,
            &logs.join("kube-controller-manager.log"),
            Duration::from_secs(5),
        )?;
        // The controller-manager is up once it has created the default ServiceAccount.
        let sa_api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), "default");
        wait_until(
            "default ServiceAccount",
            &mut controller_manager,
            || async { matches!(sa_api.get_opt("default").await, Ok(Some(_))) },
        )
        .await?;

        Ok(ControlPlane {
            controller_manager,
            apiserver,
            etcd,
            dir: dir.to_path_buf(),
            pki,
            kubeconfig,
            api_url,
            etcd_url,
        })
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Fails if any component died.
    pub fn check_alive(&mut self) -> Result<()> {
        self.etcd.check_alive()?;
        self.apiserver.check_alive()?;
        self.controller_manager.check_alive()
    }

    /// Log files of the components.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

async fn readyz(client: &Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

/// Polls `check` every 250 ms until it is true, the process dies, or the timeout.
async fn wait_until<F, Fut>(what: &str, proc_: &mut ManagedProcess, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < STARTUP_TIMEOUT {
        proc_.check_alive()?;
        if check().await {
            tracing::info!(%what, elapsed_ms = start.elapsed().as_millis() as u64, "ready");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::Timeout {
        what: format!("{what} (see {})", proc_.log().display()),
        secs: STARTUP_TIMEOUT.as_secs(),
    })
}

/// Writes a client-certificate kubeconfig.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    user: &str,
) -> Result<()> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: strata-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: strata-e2e
  context:
    cluster: strata-e2e
    user: {user}
    namespace: default
current-context: strata-e2e
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(path, yaml).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Builds a client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    // When several rustls providers are compiled in (e.g. ring via kube, aws-lc
    // via object_store), rustls cannot pick one itself; use ring. An error only
    // means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(config)?)
}
