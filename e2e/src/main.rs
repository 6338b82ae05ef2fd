//! `strata-e2e up`: start a local control plane, process kubelet and S3 server,
//! print how to reach them, and keep them running until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_e2e::binaries::Binaries;
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
            let mut map = strata_e2e::env::default_images();
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
            let (env_file, exports) = env.write_env_file()?;
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
            // SIGTERM (a script's `kill`) tears down as Ctrl-C does: the pod
            // network's bridge and namespaces are host state.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
                _ = term.recv() => {}
            }
            eprintln!("tearing down...");
            env.shutdown().await;
            Ok(())
        }
    }
}
