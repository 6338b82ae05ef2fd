//! A real S3-compatible object store for the tier: SeaweedFS (`weed server`
//! with master, volume, filer and S3 gateway in one process) on 127.0.0.1,
//! with one access key and a bucket created at start.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::net::{self, LOCALHOST};
use crate::process::ManagedProcess;
use crate::{Error, Result};

/// Credentials and endpoint of the running store.
#[derive(Debug, Clone)]
pub struct S3Info {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: String,
}

pub struct S3Server {
    process: ManagedProcess,
    pub info: S3Info,
    weed: std::path::PathBuf,
    args: Vec<String>,
    log: std::path::PathBuf,
    s3_addr: SocketAddr,
}

const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

impl S3Server {
    /// Starts SeaweedFS with data under `dir` and creates `bucket`. A start that
    /// loses one of its ten ports to another process before binding it is retried
    /// on new ports (twice at most).
    pub async fn start(bins: &Binaries, dir: &Path, bucket: &str) -> Result<S3Server> {
        let mut attempt = 1;
        loop {
            match Self::start_once(bins, dir, bucket).await {
                Err(Error::ExitedEarly { tail, .. })
                    if attempt < 3 && tail.contains("address already in use") =>
                {
                    tracing::warn!(
                        attempt,
                        "SeaweedFS lost a port before binding it; retrying on new ports"
                    );
                    // The dead server's metadata names its old ports: start afresh.
                    let _ = std::fs::remove_dir_all(dir.join("data"));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(bins: &Binaries, dir: &Path, bucket: &str) -> Result<S3Server> {
        let weed = bins.path("weed")?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
        let info = S3Info {
            endpoint: String::new(),
            access_key: "strata".into(),
            secret_key: "strata-e2e-secret".into(),
            bucket: bucket.into(),
            region: "us-east-1".into(),
        };
        let config = serde_json::json!({"identities": [{
            "name": "strata",
            "credentials": [{"accessKey": info.access_key, "secretKey": info.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]});
        let config_path = dir.join("s3.json");
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;

        let mut ports = Vec::new();
        for _ in 0..10 {
            ports.push(net::free_port()?);
        }
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, iceberg, lance] =
            ports[..]
        else {
            return Err(Error::Config("port allocation".into()));
        };
        let args: Vec<String> = vec![
            "server".into(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={master}"),
            format!("-master.port.grpc={master_grpc}"),
            "-master.volumeSizeLimitMB=64".into(),
            "-master.telemetry=false".into(),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={volume_grpc}"),
            "-volume.max=0".into(),
            "-volume.preStopSeconds=0".into(),
            "-filer".into(),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={filer_grpc}"),
            format!("-filer.localSocket={}", dir.join("filer.sock").display()),
            "-s3".into(),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={s3_grpc}"),
            format!("-s3.port.iceberg={iceberg}"),
            format!("-s3.port.lance={lance}"),
            format!("-s3.localSocket={}", dir.join("s3.sock").display()),
            format!("-s3.config={}", config_path.display()),
        ];
        let log = dir.join("seaweedfs.log");
        let mut process = spawn(&weed, &args, &log)?;
        let s3_addr = SocketAddr::new(LOCALHOST, s3);
        let start = Instant::now();
        wait_ready(&mut process, s3_addr).await?;
        // Create the bucket through the admin shell (retried: the master may still be electing).
        loop {
            process.check_alive()?;
            if create_bucket(&weed, master, master_grpc, bucket).await? {
                break;
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("creating bucket {bucket}"),
                    secs: STARTUP_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let info = S3Info {
            endpoint: format!("http://127.0.0.1:{s3}"),
            ..info
        };
        tracing::info!(endpoint = %info.endpoint, bucket, "S3 ready");
        Ok(S3Server {
            process,
            info,
            weed,
            args,
            log,
            s3_addr,
        })
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }

    /// Stops the server (an outage); its data stays for [`S3Server::restart`].
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same ports and data after [`S3Server::stop`].
    pub async fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = spawn(&self.weed, &self.args, &self.log)?;
        wait_ready(&mut self.process, self.s3_addr).await
    }
}

fn spawn(weed: &Path, args: &[String], log: &Path) -> Result<ManagedProcess> {
    ManagedProcess::spawn("seaweedfs", weed, args, log, Duration::from_secs(5))
}

/// Waits until the S3 gateway answers HTTP.
async fn wait_ready(process: &mut ManagedProcess, s3_addr: SocketAddr) -> Result<()> {
    let start = Instant::now();
    loop {
        process.check_alive()?;
        if net::http_get_status(s3_addr, "/", Duration::from_secs(2))
            .await
            .is_some()
        {
            return Ok(());
        }
        if start.elapsed() > STARTUP_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("SeaweedFS S3 on {s3_addr}"),
                secs: STARTUP_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn create_bucket(
    weed: &Path,
    master_port: u16,
    master_grpc: u16,
    bucket: &str,
) -> Result<bool> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(weed);
    cmd.arg("shell")
        // host:port.grpcPort: without it the shell assumes gRPC on port+10000.
        .arg(format!("-master=127.0.0.1:{master_port}.{master_grpc}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("spawning weed shell", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let script = format!("s3.bucket.create -name {bucket}\ns3.bucket.list\nexit\n");
        let _ = stdin.write_all(script.as_bytes()).await;
    }
    let out = match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(Error::io("running weed shell", e)),
        Err(_) => return Ok(false),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    tracing::debug!(%stdout, stderr = %String::from_utf8_lossy(&out.stderr), "weed shell");
    Ok(stdout.lines().any(|l| l.trim_start().starts_with(bucket)))
}
