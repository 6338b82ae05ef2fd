//! `strata-broker`: `dev` runs one broker on embedded defaults, `serve` runs from a
//! config file; both accept `STRATA_*` environment overrides.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_broker::alloc_guard::GuardedAlloc;
use strata_broker::config::BrokerConfig;
use strata_broker::{app, telemetry};

#[global_allocator]
static GLOBAL: GuardedAlloc = GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "strata-broker",
    version,
    about = "Strata: a Kafka-compatible streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One broker on embedded defaults: data in ./strata-data, Kafka on 127.0.0.1:9092,
    /// metrics on 127.0.0.1:9644, topics auto-created.
    Dev {
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run from a TOML config file (see docs/configuration.md).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // A workspace build can compile two rustls crypto providers in; pick one so TLS
    // clients (the S3 tier) never have to guess.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let (base, path) = match &cli.command {
        Command::Dev { data_dir } => {
            let mut c = BrokerConfig::dev();
            if let Some(d) = data_dir {
                c.data_dir = d.clone();
            }
            (c, None)
        }
        Command::Serve { config } => (BrokerConfig::default(), config.clone()),
    };
    let is_dev = matches!(cli.command, Command::Dev { .. });
    let config = match BrokerConfig::load(base, path.as_deref(), std::env::vars()) {
        Ok(mut c) => {
            // Dev mode tiers to a directory beside the data unless told otherwise.
            if is_dev && c.tier_dir.is_empty() && c.tier_bucket.is_empty() {
                c.tier_dir = c.data_dir.join("tier").to_string_lossy().into_owned();
            }
            c
        }
        Err(e) => {
            eprintln!("strata-broker: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata-broker: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(app::run(config, app::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("strata-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
