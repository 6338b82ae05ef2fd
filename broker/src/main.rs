//! `strata-broker`: `dev` runs one broker on embedded defaults, `serve` runs from a
//! config file; both accept `STRATA_*` environment overrides.

use std::os::unix::process::CommandExt;
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
        /// With --brokers: the Kafka port of every broker of the local cluster.
        #[arg(long, default_value_t = 9092)]
        kafka_port: u16,
        /// With --brokers: the admin (and quorum) gRPC port of every broker.
        #[arg(long, default_value_t = 9093)]
        admin_port: u16,
        /// With --brokers: the metrics port of every broker.
        #[arg(long, default_value_t = 9644)]
        metrics_port: u16,
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
        data_dir,
        brokers,
        kafka_port,
        admin_port,
        metrics_port,
    } = &cli.command
    {
        if *brokers > 1 {
            return run_local_cluster(
                data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./strata-data")),
                *brokers,
                [*kafka_port, *admin_port, *metrics_port],
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
    let traces = match telemetry::init_logging(&config.log_format, config.node_id) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("strata-broker: {e}");
            return ExitCode::from(2);
        }
    };
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
        Ok(()) => {
            drop(rt);
            drop(traces); // the last spans
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("strata-broker: {e:#}");
            // Exit without dropping the runtime: after a fatal error (the metadata
            // quorum stopped, say) tasks are still running, and tearing the runtime
            // down under them made a thread coming back from `block_in_place` panic
            // ("Tokio context is being shutdown"). What was written is in the page
            // cache, and the next start recovers the logs as after a crash.
            std::process::exit(1)
        }
    }
}

/// `dev --brokers N`: runs N broker processes of this binary (`serve` with the dev
/// defaults passed as environment), one per loopback address, as one cluster whose
/// first 1, 3 or 5 brokers vote; stops them all on Ctrl-C or SIGTERM. The brokers
/// die with this process however it ends (kill -9, a closed terminal): they get
/// SIGTERM from the kernel when it exits, so none keeps its ports.
fn run_local_cluster(data_dir: PathBuf, brokers: u8, ports: [u16; 3]) -> ExitCode {
    let [kafka_port, admin_port, metrics_port] = ports;
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
        .map(|i| format!("{i}@127.0.0.{i}:{admin_port}"))
        .collect();
    let mut children = Vec::new();
    // SAFETY: getpid(2) takes no arguments and cannot fail.
    let parent = unsafe { libc::getpid() };
    for i in 1..=brokers {
        let host = format!("127.0.0.{i}");
        let mut command = std::process::Command::new(&exe);
        // SAFETY: the closure runs in the forked child before exec and calls only
        // prctl(2) and getppid(2), which are async-signal-safe and allocate nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        let child = command
            .arg("serve")
            .env("STRATA_NODE_ID", i.to_string())
            .env("STRATA_CONTROLLER_VOTERS", quorum.join(","))
            .env("STRATA_DATA_DIR", data_dir.join(format!("node-{i}")))
            .env("STRATA_KAFKA_LISTEN", format!("{host}:{kafka_port}"))
            .env("STRATA_ADMIN_LISTEN", format!("{host}:{admin_port}"))
            .env("STRATA_METRICS_LISTEN", format!("{host}:{metrics_port}"))
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
                    "broker {i}: Kafka on {host}:{kafka_port}, admin on {host}:{admin_port}, data in {}",
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
    let bootstrap: Vec<String> = (1..=brokers)
        .map(|i| format!("127.0.0.{i}:{kafka_port}"))
        .collect();
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
