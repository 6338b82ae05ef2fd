//! `strata-e2e up`: start a local control plane, process kubelet and S3 server,
//! print how to reach them, and keep them running until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_e2e::binaries::Binaries;
use strata_e2e::kubelet::ImageMap;
use strata_e2e::{Env, EnvConfig};

#[derive(Parser)]
#[command(
    name = "strata-e2e",
    about = "Local Kubernetes without containers, for Strata"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start everything and wait for Ctrl-C.
    Up {
        /// Extra image mappings, IMAGE=PROGRAM (repeatable).
        #[arg(long = "image", value_name = "IMAGE=PROGRAM")]
        images: Vec<String>,
        /// Working directory (kept afterwards); a temp dir by default.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Do not start the S3 server.
        #[arg(long)]
        no_s3: bool,
        /// Bucket to create in S3.
        #[arg(long, default_value = "strata")]
        bucket: String,
    },
    /// Report whether the setup binaries are present.
    Check,
}

fn setup_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("setup.sh")
}

/// Default images: the workspace's own binaries (when built) under their short
/// names and the image names the chart and `manifests/` use, python3, and kcat
/// and sh from the host for client pods.
fn default_images() -> ImageMap {
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
        ("sh", &["/bin/sh"][..]),
    ] {
        if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
            m.insert(image.to_string(), p);
        }
    }
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
    {
        let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !exe.is_empty() {
            m.insert("python".into(), PathBuf::from(exe));
        }
    }
    m
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client::client::builder=off".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Check => {
            let b = Binaries::from_env();
            let missing = b.missing();
            if missing.is_empty() {
                println!("all binaries present in {}", b.dir.display());
            } else {
                println!("missing in {}: {}", b.dir.display(), missing.join(", "));
                println!("run: bash {}", setup_script().display());
                std::process::exit(2);
            }
            Ok(())
        }
        Cmd::Up {
            images,
            dir,
            no_s3,
            bucket,
        } => {
            let bins = Binaries::from_env();
            if !bins.missing().is_empty() {
                let script = setup_script();
                eprintln!(
                    "setup binaries missing; running bash {} (the first run takes 15-25 min)",
                    script.display()
                );
                let st = std::process::Command::new("bash")
                    .arg(&script)
                    .status()
                    .context("running setup.sh")?;
                anyhow::ensure!(
                    st.success(),
                    "setup failed; run `bash {}` and read its output",
                    script.display()
                );
            }
            let mut map = default_images();
            for spec in images {
                let (img, prog) = spec
                    .split_once('=')
                    .context("--image wants IMAGE=PROGRAM")?;
                map.insert(img.to_string(), PathBuf::from(prog));
            }
            let keep = dir.is_some();
            let config = EnvConfig {
                bins,
                images: map.clone(),
                s3_bucket: (!no_s3).then_some(bucket),
                dir,
                keep_dir: keep || EnvConfig::default().keep_dir,
            };
            let env = Env::start(config).await?;
            let mut exports = format!("export KUBECONFIG={}\n", env.kubeconfig().display());
            if let Some(s3) = env.s3_info() {
                exports.push_str(&format!(
                    "export AWS_ENDPOINT_URL={}\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_REGION={}\nexport STRATA_S3_BUCKET={}\n",
                    s3.endpoint, s3.access_key, s3.secret_key, s3.region, s3.bucket
                ));
            }
            let env_file = env.dir.join("env.sh");
            std::fs::write(&env_file, &exports).context("writing env.sh")?;
            println!("\nstrata-e2e is up (working dir {}).\n", env.dir.display());
            println!("{exports}");
            println!("# or: source {}", env_file.display());
            println!(
                "# images: {}",
                map.iter()
                    .map(|(k, v)| format!("{k}={}", v.display()))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            println!("# pod logs: {}", env.pod_logs_dir().display());
            println!(
                "# control-plane logs: {}",
                env.control_plane.logs_dir().display()
            );
            println!("Press Ctrl-C to tear everything down.");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            eprintln!("tearing down...");
            env.shutdown().await;
            Ok(())
        }
    }
}
