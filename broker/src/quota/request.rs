//! The quota side of one Kafka request, as the dispatcher drives it: who the client
//! is (the connection's principal name, `ANONYMOUS` unless it authenticated, and the
//! header's client id), the bytes of a Produce request, the
//! bytes of a Fetch response (a throttled fetch is answered empty, as Kafka does, so
//! a consumer never receives more than its quota allows) and the handler time
//! (`request_percentage`): the time spent inside the handler's polls ([`busy`]), not
//! the time it waits (a long-polling fetch, a produce waiting for the ISR, a join
//! waiting for the rebalance), as Kafka counts thread time, not purgatory time. The largest throttle earned goes into the response's
//! `throttle_time_ms` and is how long the connection stays muted afterwards.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader};
use kafka_protocol::protocol::Encodable;

use super::{Client, QuotaKind};
use crate::broker::Broker;
use crate::metadata::cluster::ClusterState;

/// One request's quota accounting.
pub struct RequestCharge {
    user: Arc<str>,
    client_id: String,
    /// The request frame's size (what a Produce is charged).
    request_bytes: usize,
    state: Arc<ClusterState>,
    /// The time spent inside the handler's polls so far.
    busy: Arc<BusyClock>,
    /// Exempt from `request_percentage` (ApiVersions, as in Kafka: a client must
    /// always be able to learn what the broker serves).
    exempt: bool,
    request_throttle: Option<i64>,
    throttle_ms: i64,
}

impl RequestCharge {
    /// Starts accounting a request of `api`, `request_bytes` long, from the client
    /// that sent `header`, authenticated as `user` (a principal name).
    pub fn begin(
        broker: &Broker,
        api: ApiKey,
        header: &RequestHeader,
        request_bytes: usize,
        user: Arc<str>,
    ) -> Self {
        RequestCharge {
            user,
            client_id: header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            request_bytes,
            state: broker.cluster(),
            busy: Arc::new(BusyClock::new()),
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
                user: &self.user,
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
            let busy = self.busy.so_far();
            let percent_seconds = busy.as_secs_f64() * 100.0;
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
    ///
    /// `file_bytes`: records of the response that are still in segment files (sent
    /// with `sendfile`). Returns true when the response was emptied: the caller
    /// drops those too.
    pub fn fetch(
        &mut self,
        broker: &Broker,
        resp: &mut FetchResponse,
        file_bytes: usize,
        version: i16,
    ) -> bool {
        let bytes = resp.compute_size(version).unwrap_or(0) + file_bytes;
        let bandwidth = self.record(broker, QuotaKind::Fetch, bytes as f64, true);
        if bandwidth > 0 {
            resp.responses.clear();
        }
        resp.throttle_time_ms = clamp_i32(bandwidth.max(self.request_time(broker)));
        bandwidth > 0
    }

    /// The `throttle_time_ms` of a response that only `request_percentage` limits.
    pub fn response_throttle(&mut self, broker: &Broker) -> i32 {
        clamp_i32(self.request_time(broker))
    }

    /// How long the connection stays muted after the response (zero: not at all).
    pub fn mute(&mut self, broker: &Broker) -> Duration {
        self.request_time(broker);
        Duration::from_millis(self.throttle_ms.max(0) as u64)
    }
}

/// The time a handler spent inside its polls: the finished ones, and the one under
/// way (a handler that charges itself from within its last poll counts that too).
pub struct BusyClock {
    base: Instant,
    done_ns: AtomicU64,
    /// When the poll under way began (nanoseconds after `base`), or `u64::MAX`.
    polling_since_ns: AtomicU64,
}

impl BusyClock {
    fn new() -> Self {
        BusyClock {
            base: Instant::now(),
            done_ns: AtomicU64::new(0),
            polling_since_ns: AtomicU64::new(u64::MAX),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn so_far(&self) -> Duration {
        let done = self.done_ns.load(Ordering::Relaxed);
        let since = self.polling_since_ns.load(Ordering::Relaxed);
        let current = if since == u64::MAX {
            0
        } else {
            self.now_ns().saturating_sub(since)
        };
        Duration::from_nanos(done.saturating_add(current))
    }
}

/// Runs `handler`, counting the time spent inside each of its polls on `clock`.
pub async fn busy<F: Future>(clock: Arc<BusyClock>, handler: F) -> F::Output {
    let mut handler = pin!(handler);
    std::future::poll_fn(move |cx| {
        let started = clock.now_ns();
        clock.polling_since_ns.store(started, Ordering::Relaxed);
        let r = handler.as_mut().poll(cx);
        clock.polling_since_ns.store(u64::MAX, Ordering::Relaxed);
        let spent = clock.now_ns().saturating_sub(started);
        clock.done_ns.fetch_add(spent, Ordering::Relaxed);
        r
    })
    .await
}

impl RequestCharge {
    /// The clock [`busy`] counts the handler's time on.
    pub fn busy_clock(&self) -> Arc<BusyClock> {
        Arc::clone(&self.busy)
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i32::MAX as i64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bounds are one-sided where a loaded machine could only make them larger, and
    // the waiting case leaves 200 ms of slack against the 250 ms it waits.
    #[tokio::test]
    async fn handler_time_counts_work_and_not_waiting() {
        let waited = Arc::new(BusyClock::new());
        busy(
            Arc::clone(&waited),
            tokio::time::sleep(Duration::from_millis(250)),
        )
        .await;
        let waited = waited.so_far();
        assert!(waited < Duration::from_millis(50), "{waited:?}");

        let worked = Arc::new(BusyClock::new());
        let inside = busy(Arc::clone(&worked), {
            let worked = Arc::clone(&worked);
            async move {
                let until = Instant::now() + Duration::from_millis(30);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                // What a handler charging itself from its last poll sees.
                worked.so_far()
            }
        })
        .await;
        assert!(inside >= Duration::from_millis(30), "{inside:?}");
        let worked = worked.so_far();
        assert!(worked >= inside, "{worked:?}");
    }
}

/// A response with a `throttle_time_ms` field, set on every response a client's
/// `request_percentage` throttles, as Kafka does (clients back off on it).
pub trait ThrottleTime {
    fn set_throttle_time_ms(&mut self, ms: i32);
}

macro_rules! throttle_time {
    ($($t:ident),* $(,)?) => {
        $(impl ThrottleTime for kafka_protocol::messages::$t {
            fn set_throttle_time_ms(&mut self, ms: i32) {
                self.throttle_time_ms = ms;
            }
        })*
    };
}

throttle_time!(
    AddOffsetsToTxnResponse,
    AddPartitionsToTxnResponse,
    AlterClientQuotasResponse,
    AlterUserScramCredentialsResponse,
    AlterConfigsResponse,
    AlterPartitionReassignmentsResponse,
    ApiVersionsResponse,
    CreateAclsResponse,
    CreatePartitionsResponse,
    CreateTopicsResponse,
    DeleteAclsResponse,
    DeleteGroupsResponse,
    DeleteRecordsResponse,
    DeleteTopicsResponse,
    DescribeAclsResponse,
    DescribeClientQuotasResponse,
    DescribeClusterResponse,
    DescribeConfigsResponse,
    DescribeGroupsResponse,
    DescribeLogDirsResponse,
    DescribeProducersResponse,
    DescribeTopicPartitionsResponse,
    DescribeTransactionsResponse,
    DescribeUserScramCredentialsResponse,
    ElectLeadersResponse,
    EndTxnResponse,
    FindCoordinatorResponse,
    HeartbeatResponse,
    IncrementalAlterConfigsResponse,
    InitProducerIdResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    ListGroupsResponse,
    ListOffsetsResponse,
    ListPartitionReassignmentsResponse,
    ListTransactionsResponse,
    MetadataResponse,
    OffsetCommitResponse,
    OffsetDeleteResponse,
    OffsetFetchResponse,
    OffsetForLeaderEpochResponse,
    SyncGroupResponse,
    TxnOffsetCommitResponse,
);
