//! `strata-operator`: runs the Cluster, Topic and ConsumerGroup controllers.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use strata_operator::context::Settings;
use strata_operator::leader::LeaseConfig;
use strata_operator::metrics_api::MetricsApiOptions;
use strata_operator::run::{run, Options};

#[derive(Parser, Debug)]
#[command(version, about = "Strata operator for Kubernetes")]
struct Args {
    /// Comma-separated namespaces to watch; all namespaces when empty.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        default_value = "",
        value_delimiter = ','
    )]
    watch_namespaces: Vec<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "STRATA_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    http_listen: SocketAddr,
    /// Address of the HTTPS external.metrics.k8s.io server for ConsumerGroup
    /// HPAs (behind the chart's APIService); not served when unset.
    #[arg(long, env = "STRATA_OPERATOR_METRICS_API_LISTEN")]
    metrics_api_listen: Option<SocketAddr>,
    /// PEM file with the CA that signs the aggregation layer's client
    /// certificate; read from kube-system/extension-apiserver-authentication when unset.
    #[arg(long, env = "STRATA_OPERATOR_METRICS_API_CLIENT_CA")]
    metrics_api_client_ca: Option<std::path::PathBuf>,
    /// Run without leader election (exactly one replica!).
    #[arg(long, env = "STRATA_OPERATOR_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "STRATA_OPERATOR_LEASE_NAME",
        default_value = "strata-operator"
    )]
    lease_name: String,
    /// Seconds between full resyncs of healthy objects.
    #[arg(long, env = "STRATA_OPERATOR_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between ConsumerGroup lag refreshes.
    #[arg(
        long,
        env = "STRATA_OPERATOR_GROUP_REFRESH_SECONDS",
        default_value_t = 15
    )]
    group_refresh_seconds: u64,
    /// Seconds a Topic finalizer waits for an unreachable cluster before releasing.
    #[arg(
        long,
        env = "STRATA_OPERATOR_FINALIZER_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    finalizer_timeout_seconds: u64,
    /// Log filter (tracing EnvFilter syntax), e.g. `info,strata_operator=debug`.
    #[arg(long, env = "STRATA_OPERATOR_LOG", default_value = "info")]
    log: String,
    /// Log format: text or json.
    #[arg(long, env = "STRATA_OPERATOR_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn main() -> anyhow::Result<()> {
    // Two rustls crypto providers may be compiled in (see Cargo.toml); choose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)?;
    // Outside the runtime: the OTLP exporter's blocking HTTP client must not be
    // created or dropped on a runtime thread.
    let traces = strata_telemetry::logging::init_with_traces(
        filter,
        strata_telemetry::LogFormat::from_name(&args.log_format),
        strata_telemetry::LogOutput::Stdout,
        "strata-operator",
        Vec::new(),
    )
    .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(operate(args));
    drop(rt);
    drop(traces); // the last spans
    result
}

async fn operate(args: Args) -> anyhow::Result<()> {
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("strata-operator-{}", std::process::id()));
    let opts = Options {
        namespaces: args
            .watch_namespaces
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        http_listen: args.http_listen,
        lease: (!args.no_leader_election).then(|| LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            identity,
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }),
        settings: Settings {
            resync: Duration::from_secs(args.resync_seconds),
            group_refresh: Duration::from_secs(args.group_refresh_seconds),
            finalizer_timeout: Duration::from_secs(args.finalizer_timeout_seconds),
        },
        metrics_api: args.metrics_api_listen.map(|listen| MetricsApiOptions {
            listen,
            client_ca_file: args.metrics_api_client_ca,
        }),
    };
    let client = kube::Client::try_default().await?;
    run(client, opts).await
}
