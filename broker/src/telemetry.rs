//! The broker's instruments (OpenTelemetry, exported in Prometheus text format) and
//! its log setup. The registry, the `/metrics`, `/healthz` and `/readyz` endpoints and
//! the subscriber itself are `strata_telemetry`'s, shared with the operator.

use std::net::SocketAddr;
use std::sync::Weak;

use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use opentelemetry::KeyValue;
use strata_telemetry::registry::RenderError;
use strata_telemetry::{LogFormat, LogOutput, MetricsRegistry};
use tracing::info;
use tracing_subscriber::EnvFilter;

pub use strata_telemetry::Readiness;

use crate::group::coordinator::GroupCoordinator;
use crate::quorum::Quorum;
use crate::replicas::ReplicaManager;

/// Installs the global tracing subscriber, logging to stderr (`RUST_LOG` overrides
/// the default level), and the OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// asks for it (service `strata-broker`, the node id on the resource). Keep the
/// guard until exit.
pub fn init_logging(
    format: &str,
    node_id: i32,
) -> Result<Option<strata_telemetry::traces::TracesGuard>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    strata_telemetry::logging::init_with_traces(
        filter,
        LogFormat::from_name(format),
        LogOutput::Stderr,
        "strata-broker",
        vec![KeyValue::new("strata.node_id", i64::from(node_id))],
    )
    .map_err(|e| e.to_string())
}

/// What the scrape-time gauges read, held weakly so the metrics never keep the
/// services alive.
pub struct ClusterView {
    pub groups: Weak<GroupCoordinator>,
    pub replicas: Weak<ReplicaManager>,
    pub quorum: Weak<Quorum>,
    pub node_id: i32,
}

/// The broker's instruments.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricsRegistry,
    pub bytes_in: Counter<u64>,
    pub records_in: Counter<u64>,
    pub bytes_out: Counter<u64>,
    pub records_out: Counter<u64>,
    pub request_latency: Histogram<f64>,
    pub requests_failed: Counter<u64>,
    pub connections: UpDownCounter<i64>,
    pub connections_rejected: Counter<u64>,
    pub protocol_errors: Counter<u64>,
    pub segments_deleted: Counter<u64>,
    pub replica_truncations: Counter<u64>,
    /// Record bytes this broker fetched as a follower.
    pub replication_bytes_fetched: Counter<u64>,
    /// Record bytes of throttled replicas moved, per side.
    pub replication_throttled_bytes: Counter<u64>,
    /// Rounds in which throttled replicas were held back, per side.
    pub replication_throttle_holds: Counter<u64>,
    /// Fetch record bytes sent from segment files to sockets (`sendfile`) or copied
    /// through memory, by `path` (`zero_copy`, `copy`).
    pub fetch_bytes: Counter<u64>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = MetricsRegistry::new("strata-broker")?;
        let meter = registry.meter();
        let metrics = Metrics {
            bytes_in: meter
                .u64_counter("strata_topic_bytes_in")
                .with_description("Record bytes appended, per topic")
                .build(),
            records_in: meter
                .u64_counter("strata_topic_records_in")
                .with_description("Records appended, per topic")
                .build(),
            bytes_out: meter
                .u64_counter("strata_topic_bytes_out")
                .with_description("Record bytes served to fetchers, per topic")
                .build(),
            records_out: meter
                .u64_counter("strata_topic_records_out")
                .with_description("Records served to fetchers, per topic")
                .build(),
            request_latency: meter
                .f64_histogram("strata_request_duration")
                .with_unit("s")
                .with_description("Kafka request handling time, per API")
                .with_boundaries(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            requests_failed: meter
                .u64_counter("strata_requests_failed")
                .with_description("Requests answered with an error code, per API")
                .build(),
            connections: meter
                .i64_up_down_counter("strata_active_connections")
                .with_description("Open Kafka client connections")
                .build(),
            connections_rejected: meter
                .u64_counter("strata_connections_rejected")
                .with_description("Connections refused because of max_connections")
                .build(),
            protocol_errors: meter
                .u64_counter("strata_protocol_errors")
                .with_description("Connections closed because of malformed or unsupported requests")
                .build(),
            segments_deleted: meter
                .u64_counter("strata_log_segments_deleted")
                .with_description("Segments deleted by retention")
                .build(),
            replica_truncations: meter
                .u64_counter("strata_replica_truncations")
                .with_description("Divergent follower log tails truncated after a leader change")
                .build(),
            replication_bytes_fetched: meter
                .u64_counter("strata_replication_fetched_bytes")
                .with_description("Record bytes fetched from leaders as a follower")
                .build(),
            replication_throttled_bytes: meter
                .u64_counter("strata_replication_throttled_bytes")
                .with_description("Record bytes of throttled replicas (reassignments) moved, per side")
                .build(),
            replication_throttle_holds: meter
                .u64_counter("strata_replication_throttle_holds")
                .with_description("Fetch rounds in which throttled replicas waited for the replication throttle, per side")
                .build(),
            fetch_bytes: meter
                .u64_counter("strata_fetch_record_bytes")
                .with_description("Record bytes of Fetch responses by how they left the broker: path=zero_copy (sendfile from the segment file) or path=copy (through memory: TLS, disk reads, the tier)")
                .build(),
            registry,
        };
        // Counters of rare events exist at 0 from the start: Prometheus' rate() and
        // increase() cannot see the first event of a series that appears with it, and
        // dashboards and alerts should not depend on something having gone wrong once.
        // Only Produce counts failed requests so far. (Per-topic counters start when
        // their topic does.)
        metrics
            .requests_failed
            .add(0, &[KeyValue::new("api", "Produce")]);
        for c in [
            &metrics.connections_rejected,
            &metrics.protocol_errors,
            &metrics.replica_truncations,
            &metrics.replication_bytes_fetched,
        ] {
            c.add(0, &[]);
        }
        for side in ["leader", "follower"] {
            for c in [
                &metrics.replication_throttled_bytes,
                &metrics.replication_throttle_holds,
            ] {
                c.add(0, &[KeyValue::new("side", side)]);
            }
        }
        Ok(metrics)
    }

    /// Registers the gauges computed at scrape time from the services' state:
    /// `strata_consumergroup_lag{group,topic,partition}` (committed offsets against
    /// high watermarks), `strata_cluster_partitions{state}` and
    /// `strata_controller_active`.
    pub fn register_cluster_gauges(&self, view: ClusterView) {
        let meter = self.registry.meter();
        let ClusterView {
            groups,
            replicas,
            quorum,
            node_id,
        } = view;
        let cluster_quorum = quorum.clone();
        let _gauge = meter
            .i64_observable_gauge("strata_consumergroup_lag")
            .with_description(
                "Records between a group's committed offset and the partition end, per partition",
            )
            .with_callback(move |obs| {
                let (Some(groups), Some(replicas)) = (groups.upgrade(), replicas.upgrade()) else {
                    return;
                };
                for g in groups.group_ids() {
                    for l in groups.lag(&replicas, &g) {
                        obs.observe(
                            l.lag,
                            &[
                                KeyValue::new("group", g.clone()),
                                KeyValue::new("topic", l.topic.clone()),
                                KeyValue::new("partition", i64::from(l.partition)),
                            ],
                        );
                    }
                }
            })
            .build();
        let _gauge = meter
            .i64_observable_gauge("strata_cluster_partitions")
            .with_description(
                "Partitions by state as this broker's metadata sees them: under_replicated, offline, \
                 at_min_isr (ISR shrunk to min.insync.replicas, one more loss blocks acks=all), \
                 under_min_isr (acks=all refused), led_here",
            )
            .with_callback(move |obs| {
                let Some(q) = cluster_quorum.upgrade() else { return };
                let state = q.state();
                let led = state
                    .topics
                    .values()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| p.leader == node_id)
                    .count();
                obs.observe(state.under_replicated() as i64, &[KeyValue::new("state", "under_replicated")]);
                obs.observe(state.offline() as i64, &[KeyValue::new("state", "offline")]);
                obs.observe(state.at_min_isr() as i64, &[KeyValue::new("state", "at_min_isr")]);
                obs.observe(state.under_min_isr() as i64, &[KeyValue::new("state", "under_min_isr")]);
                obs.observe(led as i64, &[KeyValue::new("state", "led_here")]);
            })
            .build();
        let _gauge = meter
            .i64_observable_gauge("strata_controller_active")
            .with_description("1 when this broker is the metadata quorum leader (controller)")
            .with_callback(move |obs| {
                let Some(q) = quorum.upgrade() else {
                    return;
                };
                obs.observe(i64::from(q.is_leader()), &[]);
            })
            .build();
    }

    /// Registers the transaction instruments: `strata_transactions_total{outcome}`
    /// (started, committed, aborted, timed_out: transactions this broker coordinated),
    /// `strata_transactions_open` (open transactions coordinated here) and
    /// `strata_partition_lso_lag{topic,partition}` (records between the last stable
    /// offset and the high watermark of each partition led here that has one: how far
    /// an open transaction holds `read_committed` consumers back).
    pub fn register_transactions(
        &self,
        txns: Weak<crate::txn::TransactionCoordinator>,
        replicas: Weak<ReplicaManager>,
    ) {
        let meter = self.registry.meter();
        let counted = txns.clone();
        let _counter = meter
            .u64_observable_counter("strata_transactions")
            .with_description("Transactions coordinated by this broker, by outcome")
            .with_callback(move |obs| {
                let Some(t) = counted.upgrade() else { return };
                let c = &t.counters;
                for (outcome, n) in [
                    ("started", &c.started),
                    ("committed", &c.committed),
                    ("aborted", &c.aborted),
                    ("timed_out", &c.timed_out),
                ] {
                    obs.observe(
                        n.load(std::sync::atomic::Ordering::Relaxed),
                        &[KeyValue::new("outcome", outcome)],
                    );
                }
            })
            .build();
        let _gauge = meter
            .u64_observable_gauge("strata_transactions_open")
            .with_description("Open transactions coordinated by this broker")
            .with_callback(move |obs| {
                if let Some(t) = txns.upgrade() {
                    obs.observe(t.open_count(), &[]);
                }
            })
            .build();
        let _gauge = meter
            .i64_observable_gauge("strata_partition_lso_lag")
            .with_description(
                "High watermark minus last stable offset, for partitions led here with an \
                 undecided transaction",
            )
            .with_callback(move |obs| {
                let Some(r) = replicas.upgrade() else { return };
                for t in r.all_topics() {
                    for p in t.local().filter(|p| p.is_leader()) {
                        let lag = p.high_watermark() - p.last_stable_offset();
                        if lag > 0 {
                            obs.observe(
                                lag,
                                &[
                                    KeyValue::new("topic", t.record.name.clone()),
                                    KeyValue::new("partition", i64::from(p.index)),
                                ],
                            );
                        }
                    }
                }
            })
            .build();
    }

    /// Registers `strata_data_dir_free_bytes` and `strata_data_dir_capacity_bytes`:
    /// the filesystem holding `data_dir`, read with statvfs at scrape time. A broker
    /// whose log disk fills stops accepting writes, and on Kubernetes the volume's
    /// usage is otherwise only visible through kubelet metrics that not every
    /// Prometheus scrapes.
    pub fn register_data_dir(&self, data_dir: std::path::PathBuf) {
        let meter = self.registry.meter();
        let free_dir = data_dir.clone();
        let _gauge = meter
            .u64_observable_gauge("strata_data_dir_free_bytes")
            .with_description("Bytes available to the broker on the data directory's filesystem")
            .with_callback(move |obs| {
                // An unreadable filesystem reports nothing rather than a made-up zero,
                // so a disk alert cannot fire on a statvfs error.
                if let Ok(space) = filesystem_space(&free_dir) {
                    obs.observe(space.available, &[]);
                }
            })
            .build();
        let _gauge = meter
            .u64_observable_gauge("strata_data_dir_capacity_bytes")
            .with_description("Size of the data directory's filesystem in bytes")
            .with_callback(move |obs| {
                if let Ok(space) = filesystem_space(&data_dir) {
                    obs.observe(space.total, &[]);
                }
            })
            .build();
    }

    /// Registers `strata_log_index_memory_bytes`: the memory of every open
    /// segment's offset and time index entries (one per `index.interval.bytes` of
    /// log, 8 and 12 bytes: ~2–3 MiB per GiB of log at the default 4 KiB).
    pub fn register_index_memory(&self) {
        let _gauge = self
            .registry
            .meter()
            .u64_observable_gauge("strata_log_index_memory_bytes")
            .with_description(
                "Bytes of memory held by the segment indexes (offset and time) of all partitions",
            )
            .with_callback(|obs| obs.observe(crate::log::index::memory_bytes(), &[]))
            .build();
    }

    /// The meter further instruments (the tier's) are created from.
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.registry.meter()
    }

    pub fn topic(topic: &str) -> [KeyValue; 1] {
        [KeyValue::new("topic", topic.to_string())]
    }

    /// Prometheus text exposition of every instrument.
    pub fn render(&self) -> Result<String, RenderError> {
        self.registry.render()
    }
}

/// Space of one filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemSpace {
    /// Free bytes an unprivileged process may use (`f_bavail`): the broker does not
    /// run as root, so the blocks reserved for root are not its to fill.
    pub available: u64,
    pub total: u64,
}

/// statvfs(3) of the filesystem holding `path`.
// The statvfs fields are u64 on 64-bit Linux but u32 on some 32-bit targets;
// u64::from keeps this portable, and is a no-op (which clippy flags) here.
#[allow(clippy::useless_conversion)]
pub fn filesystem_space(path: &std::path::Path) -> std::io::Result<FilesystemSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `st`
    // points to writable memory of the right type, which statvfs fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let block = u64::from(st.f_frsize);
    Ok(FilesystemSpace {
        available: u64::from(st.f_bavail).saturating_mul(block),
        total: u64::from(st.f_blocks).saturating_mul(block),
    })
}

/// Binds the HTTP listener; the returned future serves until `shutdown` resolves.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let server = strata_telemetry::http::bind(addr, metrics.registry, ready, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind metrics listener {addr}: {e}"))?;
    info!(%addr, "metrics and health endpoints listening");
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_space_of_a_temp_dir_is_plausible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = filesystem_space(dir.path()).expect("statvfs");
        assert!(space.total > 0, "{space:?}");
        assert!(space.available <= space.total, "{space:?}");
    }

    #[test]
    fn filesystem_space_of_a_missing_path_is_an_error() {
        assert!(filesystem_space(std::path::Path::new("/nonexistent/strata")).is_err());
    }

    #[test]
    fn data_dir_gauges_are_exported() {
        let m = Metrics::new().expect("metrics");
        let dir = tempfile::tempdir().expect("tempdir");
        m.register_data_dir(dir.path().to_path_buf());
        let text = m.render().expect("render");
        assert!(text.contains("strata_data_dir_free_bytes "), "{text}");
        assert!(text.contains("strata_data_dir_capacity_bytes "), "{text}");
    }
}
