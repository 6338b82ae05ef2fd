//! The cleaner's background task: every `log_cleaner_backoff_ms` it looks at the
//! compacted partition logs hosted here (leader or follower: every replica cleans
//! its own log) and cleans those that are due, dirtiest first, one at a time,
//! throttled to `log_cleaner_io_max_bytes_per_second`. It remembers per partition
//! where its last cleaning ended (the first dirty offset; after a restart the whole
//! log is dirty once) and when it ran, which the metrics report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::KeyValue;
use parking_lot::Mutex;
use tracing::{info, warn};

use super::pass::{self, CleanPlan, Cleaned, Throttle};
use crate::log::LogError;

/// A partition log the cleaner can clean (implemented by the hosted partition).
pub trait CleanableLog: Send + Sync {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    /// [`PartitionLog::cleaning_plan`](crate::log::PartitionLog::cleaning_plan).
    fn cleaning_plan(&self, first_dirty: i64, now_ms: i64) -> Option<CleanPlan>;
    /// [`PartitionLog::install_cleaned`](crate::log::PartitionLog::install_cleaned).
    fn install_cleaned(&self, cleaned: Vec<Cleaned>, now_ms: i64) -> Result<usize, LogError>;
}

#[derive(Debug, Clone, Copy, Default)]
struct PartitionState {
    first_dirty: i64,
    last_clean_ms: Option<i64>,
    dirty_ratio: f64,
}

/// The broker's log cleaner.
pub struct LogCleaner {
    /// The throttle of the next pass (0: none); a dynamic broker config.
    io_max_bytes_per_second: AtomicU64,
    state: Arc<Mutex<HashMap<(String, i32), PartitionState>>>,
    bytes_read: Counter<u64>,
    bytes_written: Counter<u64>,
    records_removed: Counter<u64>,
}

impl LogCleaner {
    /// Creates the cleaner and its instruments: `strata_cleaner_bytes_read`,
    /// `strata_cleaner_bytes_written`, `strata_cleaner_records_removed` (per topic),
    /// and per partition `strata_cleaner_dirty_ratio` and
    /// `strata_cleaner_seconds_since_last_clean`.
    pub fn new(io_max_bytes_per_second: u64, meter: &Meter) -> Self {
        let state: Arc<Mutex<HashMap<(String, i32), PartitionState>>> = Arc::default();
        let ratios = Arc::downgrade(&state);
        let _gauge = meter
            .f64_observable_gauge("strata_cleaner_dirty_ratio")
            .with_description(
                "Share of a compacted partition's cleanable bytes not cleaned yet, as of the \
                 cleaner's last look",
            )
            .with_callback(move |obs| {
                let Some(s) = ratios.upgrade() else { return };
                for ((topic, p), st) in s.lock().iter() {
                    obs.observe(st.dirty_ratio, &labels(topic, *p));
                }
            })
            .build();
        let ages = Arc::downgrade(&state);
        let _gauge = meter
            .f64_observable_gauge("strata_cleaner_seconds_since_last_clean")
            .with_description("Seconds since the cleaner last cleaned a compacted partition")
            .with_callback(move |obs| {
                let Some(s) = ages.upgrade() else { return };
                let now = crate::clock::now_ms();
                for ((topic, p), st) in s.lock().iter() {
                    if let Some(at) = st.last_clean_ms {
                        obs.observe((now - at).max(0) as f64 / 1000.0, &labels(topic, *p));
                    }
                }
            })
            .build();
        LogCleaner {
            io_max_bytes_per_second: AtomicU64::new(io_max_bytes_per_second),
            state,
            bytes_read: meter
                .u64_counter("strata_cleaner_bytes_read")
                .with_description("Bytes the log cleaner read")
                .build(),
            bytes_written: meter
                .u64_counter("strata_cleaner_bytes_written")
                .with_description("Bytes the log cleaner wrote (rewritten segments)")
                .build(),
            records_removed: meter
                .u64_counter("strata_cleaner_records_removed")
                .with_description(
                    "Records the log cleaner removed (superseded, tombstones, aborted)",
                )
                .build(),
        }
    }

    /// Sets the throttle of the passes that start from now on (0: none).
    pub fn set_io_max_bytes_per_second(&self, rate: u64) {
        if self.io_max_bytes_per_second.swap(rate, Ordering::Relaxed) != rate {
            info!(rate, "log cleaner throttle changed");
        }
    }

    /// One pass over `logs`: cleans every log that is due, dirtiest first. Blocking
    /// (file I/O, throttling sleeps): run it on a blocking thread.
    pub fn run_pass(&self, logs: &[Arc<dyn CleanableLog>], now_ms: i64) -> usize {
        let mut due: Vec<(f64, &Arc<dyn CleanableLog>, CleanPlan)> = Vec::new();
        {
            let mut state = self.state.lock();
            let hosted: std::collections::HashSet<(String, i32)> = logs
                .iter()
                .map(|l| (l.topic().to_string(), l.partition()))
                .collect();
            state.retain(|k, _| hosted.contains(k));
            for log in logs {
                let key = (log.topic().to_string(), log.partition());
                let st = state.get(&key).copied().unwrap_or_default();
                let Some(plan) = log.cleaning_plan(st.first_dirty, now_ms) else {
                    continue;
                };
                let ratio = plan.dirty_ratio();
                state.entry(key).or_default().dirty_ratio = ratio;
                if plan.is_due(now_ms) {
                    due.push((ratio, log, plan));
                }
            }
        }
        due.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut throttle = Throttle::new(self.io_max_bytes_per_second.load(Ordering::Relaxed));
        let mut cleaned = 0;
        for (_, log, plan) in due {
            if self.clean_one(log.as_ref(), &plan, &mut throttle) {
                cleaned += 1;
            }
        }
        cleaned
    }

    fn clean_one(&self, log: &dyn CleanableLog, plan: &CleanPlan, throttle: &mut Throttle) -> bool {
        let now = crate::clock::now_ms();
        let topic = log.topic();
        let attrs = [KeyValue::new("topic", topic.to_string())];
        let started = std::time::Instant::now();
        let (rewritten, stats) = match pass::clean(plan, now, throttle) {
            Ok(r) => r,
            Err(e) => {
                warn!(topic, partition = log.partition(), error = %e, "log cleaning failed");
                return false;
            }
        };
        self.bytes_read.add(stats.bytes_read, &attrs);
        self.bytes_written.add(stats.bytes_written, &attrs);
        let planned = rewritten.len();
        let swapped = match log.install_cleaned(rewritten, now) {
            Ok(n) => n,
            Err(e) => {
                warn!(topic, partition = log.partition(), error = %e, "cannot swap in cleaned segments");
                return false;
            }
        };
        self.records_removed.add(stats.records_removed, &attrs);
        info!(
            topic,
            partition = log.partition(),
            segments = plan.segments.len(),
            swapped,
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            records_removed = stats.records_removed,
            tombstones_removed = stats.tombstones_removed,
            seconds = started.elapsed().as_secs_f64(),
            "cleaned log"
        );
        let mut state = self.state.lock();
        let st = state
            .entry((topic.to_string(), log.partition()))
            .or_default();
        // A cleaning that stopped early (a segment changed under it) leaves the
        // range dirty, so that the next one builds its offset map from all of it.
        if swapped == planned {
            st.first_dirty = plan.cleanable_end();
            st.dirty_ratio = 0.0;
        }
        st.last_clean_ms = Some(now);
        true
    }
}

fn labels(topic: &str, partition: i32) -> [KeyValue; 2] {
    [
        KeyValue::new("topic", topic.to_string()),
        KeyValue::new("partition", i64::from(partition)),
    ]
}
