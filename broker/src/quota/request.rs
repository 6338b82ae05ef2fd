//! The quota side of one Kafka request, as the dispatcher drives it: who the client
//! is (user `ANONYMOUS`, the header's client id), the bytes of a Produce request, the
//! bytes of a Fetch response (a throttled fetch is answered empty, as Kafka does, so
//! a consumer never receives more than its quota allows) and the handler time
//! (`request_percentage`). The largest throttle earned goes into the response's
//! `throttle_time_ms` and is how long the connection stays muted afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader};
use kafka_protocol::protocol::Encodable;

use super::{Client, QuotaKind, ANONYMOUS};
use crate::broker::Broker;
use crate::metadata::cluster::ClusterState;

/// One request's quota accounting.
pub struct RequestCharge {
    user: &'static str,
    client_id: String,
    /// The request frame's size (what a Produce is charged).
    request_bytes: usize,
    state: Arc<ClusterState>,
    started: Instant,
    /// Exempt from `request_percentage` (ApiVersions, as in Kafka: a client must
    /// always be able to learn what the broker serves).
    exempt: bool,
    request_throttle: Option<i64>,
    throttle_ms: i64,
}

impl RequestCharge {
    /// Starts accounting a request of `api`, `request_bytes` long, from the client
    /// that sent `header`.
    pub fn begin(
        broker: &Broker,
        api: ApiKey,
        header: &RequestHeader,
        request_bytes: usize,
    ) -> Self {
        RequestCharge {
            user: ANONYMOUS,
            client_id: header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            request_bytes,
            state: broker.cluster(),
            started: Instant::now(),
            exempt: api == ApiKey::ApiVersions,
            request_throttle: None,
            throttle_ms: 0,
        }
    }

    fn record(&mut self, broker: &Broker, kind: QuotaKind, value: f64, undo: bool) -> i64 {
        let now = broker.quotas.now_ms();
        let t = broker.quotas.record(
            &self.state.client_quotas,
            kind,
            Client {
                user: self.user,
                client_id: &self.client_id,
            },
            value,
            undo,
            now,
        );
        self.throttle_ms = self.throttle_ms.max(t);
        t
    }

    /// Charges the handler time so far against `request_percentage`, once.
    pub fn request_time(&mut self, broker: &Broker) -> i64 {
        if let Some(t) = self.request_throttle {
            return t;
        }
        let t = if self.exempt || self.state.client_quotas.entries.is_empty() {
            0
        } else {
            // Percent of one handler for one second = 10 ms of handler time.
            let percent_seconds = self.started.elapsed().as_secs_f64() * 100.0;
            self.record(broker, QuotaKind::Request, percent_seconds, false)
        };
        self.request_throttle = Some(t);
        t
    }

    /// Charges a Produce request's bytes; the throttle for its response.
    pub fn produce(&mut self, broker: &Broker) -> i32 {
        let bytes = self.request_bytes as f64;
        let bandwidth = self.record(broker, QuotaKind::Produce, bytes, false);
        clamp_i32(bandwidth.max(self.request_time(broker)))
    }

    /// Charges a Fetch response and sets its throttle; a throttled response loses its
    /// records (the consumer fetches them again after the throttle).
    pub fn fetch(&mut self, broker: &Broker, resp: &mut FetchResponse, version: i16) {
        let bytes = resp.compute_size(version).unwrap_or(0);
        let bandwidth = self.record(broker, QuotaKind::Fetch, bytes as f64, true);
        if bandwidth > 0 {
            resp.responses.clear();
        }
        resp.throttle_time_ms = clamp_i32(bandwidth.max(self.request_time(broker)));
    }

    /// How long the connection stays muted after the response (zero: not at all).
    pub fn mute(&mut self, broker: &Broker) -> Duration {
        self.request_time(broker);
        Duration::from_millis(self.throttle_ms.max(0) as u64)
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i32::MAX as i64) as i32
}
