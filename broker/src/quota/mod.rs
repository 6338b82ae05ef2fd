//! Client quotas: `producer_byte_rate`, `consumer_byte_rate` and `request_percentage`
//! by user and client id, as Kafka enforces them. The values live in the metadata
//! quorum (`config`, part of [`ClusterState`](crate::metadata::cluster::ClusterState)),
//! so every broker enforces the same quotas; each broker measures its own traffic
//! (Kafka's quotas are per broker too) in sampled windows (`rate`) and, when a client
//! is over its quota, answers at once with `throttle_time_ms` and then mutes the
//! connection for that long (KIP-219) — the glue to requests is in `request`.
//!
//! The user is the connection's principal name: the SASL username, the mapped
//! client-certificate subject, or `ANONYMOUS` (see `security`).

pub mod config;
pub mod rate;
pub mod request;

use std::collections::HashMap;
use std::time::Instant;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;
use parking_lot::Mutex;
use tracing::debug;

use config::Bucket;
pub use config::{ClientQuotas, EntityName, QuotaEntity, QuotaKind, QuotaValue};
use rate::{throttle_ms, SampledRate};
pub use request::{RequestCharge, ThrottleTime};

/// The principal of unauthenticated connections, as Kafka names it.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// Kafka's `quota.window.num`: samples in a quota measurement.
pub const WINDOW_SAMPLES: usize = 11;
/// Kafka's `quota.window.size.seconds`, in milliseconds.
pub const WINDOW_MS: i64 = 1000;
/// Longest throttle handed out at once: the whole measured span.
pub const MAX_THROTTLE_MS: i64 = WINDOW_SAMPLES as i64 * WINDOW_MS;

/// Sweep idle buckets after this many recordings.
const SWEEP_EVERY: u64 = 10_000;

/// The throttling metrics: time handed out and responses throttled, per quota kind.
struct QuotaMetrics {
    throttle_time: Histogram<f64>,
    throttled: Counter<u64>,
}

/// Who a request comes from, as quotas see it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
}

/// One broker's usage counters for every bucket with a quota.
pub struct QuotaManager {
    buckets: Mutex<HashMap<Bucket, SampledRate>>,
    recordings: std::sync::atomic::AtomicU64,
    epoch: Instant,
    metrics: Option<QuotaMetrics>,
}

impl QuotaManager {
    /// A manager that reports to `meter` (none in unit tests).
    pub fn new(meter: Option<&Meter>) -> Self {
        let metrics = meter.map(|m| {
            let metrics = QuotaMetrics {
                throttle_time: m
                    .f64_histogram("strata_quota_throttle_time")
                    .with_unit("s")
                    .with_description(
                        "Throttle time given to clients over a quota, per quota \
                         (produce, fetch, request)",
                    )
                    .with_boundaries(vec![0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 11.0])
                    .build(),
                throttled: m
                    .u64_counter("strata_quota_throttled_responses")
                    .with_description(
                        "Responses throttled because a client was over a quota, per quota",
                    )
                    .build(),
            };
            for k in QuotaKind::ALL {
                metrics
                    .throttled
                    .add(0, &[KeyValue::new("quota", k.label())]);
            }
            metrics
        });
        QuotaManager {
            buckets: Mutex::new(HashMap::new()),
            recordings: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        }
    }

    /// Monotonic milliseconds (rates must not jump with the wall clock).
    pub fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// Records `value` against the quota of `kind` for `client` and returns the
    /// throttle time it earned (0 when within its quota or without one). With
    /// `undo_if_throttled` (Fetch: a throttled fetch is answered empty) a throttled
    /// value is not counted.
    pub fn record(
        &self,
        quotas: &ClientQuotas,
        kind: QuotaKind,
        client: Client<'_>,
        value: f64,
        undo_if_throttled: bool,
        now_ms: i64,
    ) -> i64 {
        let Client { user, client_id } = client;
        let Some(resolved) = quotas.resolve(kind, user, client_id) else {
            return 0;
        };
        let n = self
            .recordings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut buckets = self.buckets.lock();
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            buckets.retain(|_, r| !r.is_idle(now_ms));
        }
        let sensor = buckets
            .entry(resolved.bucket)
            .or_insert_with(|| SampledRate::new(WINDOW_SAMPLES, WINDOW_MS));
        sensor.record(value, now_ms);
        let rate = sensor.rate(now_ms);
        let throttle = throttle_ms(
            rate,
            resolved.bound,
            sensor.window_ms(now_ms),
            MAX_THROTTLE_MS,
        );
        if throttle > 0 && undo_if_throttled {
            sensor.record(-value, now_ms);
        }
        drop(buckets);
        if throttle > 0 {
            debug!(
                quota = kind.key(),
                user,
                client_id,
                rate,
                bound = resolved.bound,
                throttle_ms = throttle,
                "client over its quota"
            );
            if let Some(m) = &self.metrics {
                let label = [KeyValue::new("quota", kind.label())];
                m.throttle_time.record(throttle as f64 / 1000.0, &label);
                m.throttled.add(1, &label);
            }
        }
        throttle
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn anon(client_id: &str) -> Client<'_> {
        Client {
            user: ANONYMOUS,
            client_id,
        }
    }

    fn quotas(key: &str, v: f64) -> ClientQuotas {
        let mut q = ClientQuotas::default();
        let entity = QuotaEntity {
            user: None,
            client_id: Some(EntityName::Default),
        };
        q.alter(
            &entity,
            &BTreeMap::from([(key.to_string(), Some(QuotaValue(v)))]),
        )
        .unwrap();
        q
    }

    /// A client that waits out every throttle it is given is held at its quota.
    #[test]
    fn a_client_that_honours_throttles_is_held_at_its_quota() {
        let m = QuotaManager::new(None);
        let q = quotas("producer_byte_rate", 10_000.0);
        let (mut now, mut sent, mut throttled) = (0i64, 0f64, 0);
        while now < 60_000 {
            let t = m.record(&q, QuotaKind::Produce, anon("p"), 1000.0, false, now);
            sent += 1000.0;
            throttled += (t > 0) as i32;
            now += 10 + t; // sends every 10 ms unless told to wait
        }
        // 60 s at 10 kB/s, plus the first burst the minimum span allows.
        let rate = sent / 60.0;
        assert!(rate > 10_000.0 && rate < 12_000.0, "{rate}");
        assert!(throttled > 0);
        // Another client id has a bucket of its own (the default is per client).
        assert_eq!(
            m.record(&q, QuotaKind::Produce, anon("other"), 1000.0, false, now),
            0
        );
        // Without a quota nothing is counted.
        assert_eq!(
            m.record(&q, QuotaKind::Fetch, anon("p"), 1e9, false, now),
            0
        );
    }

    #[test]
    fn a_throttled_fetch_is_not_counted() {
        let m = QuotaManager::new(None);
        let q = quotas("consumer_byte_rate", 1000.0);
        // 10 s worth at once: the minimum span holds exactly that.
        assert_eq!(
            m.record(
                &q,
                QuotaKind::Fetch,
                Client {
                    user: "u",
                    client_id: "c"
                },
                10_000.0,
                true,
                0
            ),
            0
        );
        let t = m.record(
            &q,
            QuotaKind::Fetch,
            Client {
                user: "u",
                client_id: "c",
            },
            5_000.0,
            true,
            0,
        );
        assert_eq!(t, 5_000);
        // Undone: the same small fetch is still throttled the same, not more.
        assert_eq!(
            m.record(
                &q,
                QuotaKind::Fetch,
                Client {
                    user: "u",
                    client_id: "c"
                },
                5_000.0,
                true,
                0
            ),
            t
        );
    }
}
