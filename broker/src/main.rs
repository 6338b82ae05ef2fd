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
        /// Start a local cluster of this many brokers on 127.0.0.1..N (Kafka on port
        /// 9092 of each, admin 9093, metrics 9644), data in <data-dir>/node-<id>.
        #[arg(long, default_value_t = 1)]
        brokers: u8,
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
    if let Command::Dev {
        data_dir, brokers, ..
    } = &cli.command
    {
        if *brokers > 1 {
            return run_local_cluster(
                data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./strata-data")),
                *brokers,
            );
        }
    }
    let (base, path) = match &cli.command {
        Command::Dev { data_dir, .. } => {
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

/// `dev --brokers N`: runs N broker processes of this binary (`serve` with the dev
/// defaults passed as environment), one per loopback address, as one cluster whose
/// first 1, 3 or 5 brokers vote; stops them all on Ctrl-C or SIGTERM.
fn run_local_cluster(data_dir: PathBuf, brokers: u8) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("strata-broker: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let voters = match brokers {
        1..=2 => 1,
        3..=4 => 3,
        _ => 5,
    };
    let quorum: Vec<String> = (1..=voters)
        .map(|i| format!("{i}@127.0.0.{i}:9093"))
        .collect();
    let mut children = Vec::new();
    for i in 1..=brokers {
        let host = format!("127.0.0.{i}");
        let child = std::process::Command::new(&exe)
            .arg("serve")
            .env("STRATA_NODE_ID", i.to_string())
            .env("STRATA_CONTROLLER_VOTERS", quorum.join(","))
            .env("STRATA_DATA_DIR", data_dir.join(format!("node-{i}")))
            .env("STRATA_KAFKA_LISTEN", format!("{host}:9092"))
            .env("STRATA_ADMIN_LISTEN", format!("{host}:9093"))
            .env("STRATA_METRICS_LISTEN", format!("{host}:9644"))
            .env("STRATA_AUTO_CREATE_TOPICS", "true")
            .env(
                "STRATA_DEFAULT_REPLICATION_FACTOR",
                brokers.min(3).to_string(),
            )
            .env("STRATA_RETENTION_CHECK_INTERVAL_MS", "30000")
            .spawn();
        match child {
            Ok(c) => {
                println!(
                    "broker {i}: Kafka on {host}:9092, admin on {host}:9093, data in {}",
                    data_dir.join(format!("node-{i}")).display()
                );
                children.push(c);
            }
            Err(e) => {
                eprintln!("strata-broker: cannot start broker {i}: {e}");
                stop_children(&mut children);
                return ExitCode::FAILURE;
            }
        }
    }
    let bootstrap: Vec<String> = (1..=brokers).map(|i| format!("127.0.0.{i}:9092")).collect();
    println!("bootstrap servers: {}", bootstrap.join(","));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata-broker: cannot start runtime: {e}");
            stop_children(&mut children);
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(app::shutdown_signal());
    stop_children(&mut children);
    ExitCode::SUCCESS
}

fn stop_children(children: &mut [std::process::Child]) {
    for c in children.iter() {
        // SAFETY: kill(2) takes no pointers; the pid is our own child's, and an error
        // only means it has already exited.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}
