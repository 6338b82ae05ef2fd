//! The leader's side of a follower fetch: for each partition, fence stale epochs,
//! detect a divergent follower log, record the follower's progress (which moves the
//! high watermark) and read what follows its offset, long-polling while there is
//! nothing new. Reads the page cache holds are served inline; cold ones go to the
//! blocking pool. The answer leaves out partitions with nothing new for the follower
//! (see `PartitionFetch.high_watermark` in `internal.proto`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use opentelemetry::KeyValue;
use tracing::warn;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::log::ReadMode;
use crate::partition::{FollowerFetch, FollowerRead, Partition};
use crate::quorum::proto::{
    PartitionData, PartitionFetch, ReplicaFetchRequest, ReplicaFetchResponse,
};
use crate::replication::throttle::{self, Side};

/// Plans and reads one partition of a follower fetch: on this thread when the page
/// cache holds what it needs, on the blocking pool otherwise.
async fn serve_partition(
    p: &Arc<Partition>,
    read: FollowerFetch,
    now: i64,
) -> Result<(FollowerRead, std::io::Result<Bytes>), ResponseError> {
    if let Some(r) = p.serve_follower_with(read, now, ReadMode::Cached)? {
        let FollowerRead::Data(snap) = &r else {
            return Ok((r, Ok(Bytes::new())));
        };
        match snap.plan.read_with(ReadMode::Cached) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            data => return Ok((r, data)),
        }
        let plan = snap.plan.clone();
        let data = crate::blocking::run(move || plan.read())
            .await
            .unwrap_or_else(|| Err(std::io::Error::other("the broker is shutting down")));
        return Ok((r, data));
    }
    let p = Arc::clone(p);
    crate::blocking::run(move || {
        let r = p.serve_follower_with(read, now, ReadMode::Blocking)?;
        let r = r.ok_or(ResponseError::KafkaStorageError)?;
        let data = match &r {
            FollowerRead::Data(snap) => snap.plan.read(),
            FollowerRead::Diverging { .. } => Ok(Bytes::new()),
        };
        Ok((r, data))
    })
    .await
    .unwrap_or(Err(ResponseError::KafkaStorageError))
}

/// A partition's answer before anything is known.
fn empty_answer(topic: &str, partition: i32) -> PartitionData {
    PartitionData {
        topic: topic.to_string(),
        partition,
        high_watermark: -1,
        log_start_offset: -1,
        diverging_epoch: -1,
        diverging_end_offset: -1,
        ..Default::default()
    }
}

/// Fills a partition's answer from what serving it gave. Returns the record bytes
/// in it and whether it is worth answering at once (records, divergence, an error).
fn answer(
    pd: &mut PartitionData,
    part: Option<&Partition>,
    result: Result<(FollowerRead, std::io::Result<Bytes>), ResponseError>,
) -> (usize, bool) {
    match result {
        Ok((FollowerRead::Data(snap), data)) => {
            pd.high_watermark = snap.high_watermark;
            pd.log_start_offset = snap.log_start_offset;
            match data {
                Ok(data) => {
                    let n = data.len();
                    pd.records = data;
                    (n, n > 0)
                }
                Err(e) => {
                    warn!(topic = %pd.topic, partition = pd.partition, error = %e, "cannot read for a follower");
                    pd.error_code = ResponseError::KafkaStorageError.code() as i32;
                    (0, true)
                }
            }
        }
        Ok((FollowerRead::Diverging { epoch, end_offset }, _)) => {
            pd.diverging_epoch = epoch;
            pd.diverging_end_offset = end_offset;
            (0, true)
        }
        Err(e) => {
            if let Some(p) = part {
                pd.high_watermark = p.high_watermark();
                pd.log_start_offset = p.log_start_offset();
            }
            pd.error_code = e.code() as i32;
            (0, true)
        }
    }
}

/// Whether a partition's answer tells the follower anything its fetch did not
/// already say (records, errors and divergence aside): a new high watermark or log
/// start. An older follower, which does not say, gets every partition.
fn news_for(pf: &PartitionFetch, pd: &PartitionData) -> bool {
    pf.high_watermark != Some(pd.high_watermark) || pf.log_start_offset != Some(pd.log_start_offset)
}

/// Serves one partition of a follower fetch on the calling thread, blocking on the
/// disk: the leader's whole side of replication for one partition, as the
/// replication simulation drives it.
#[cfg(test)]
pub(crate) fn serve_blocking(p: &Partition, read: FollowerFetch, now: i64) -> PartitionData {
    let mut pd = empty_answer(&p.topic, p.index);
    let result = p
        .serve_follower(
            read.replica,
            read.epoch,
            read.fetch_offset,
            read.last_fetched_epoch,
            read.max_bytes,
            now,
        )
        .map(|r| {
            let data = match &r {
                FollowerRead::Data(snap) => snap.plan.read(),
                FollowerRead::Diverging { .. } => Ok(Bytes::new()),
            };
            (r, data)
        });
    answer(&mut pd, Some(p), result);
    pd
}

/// The leader's side of a follower fetch, long-polling up to `max_wait_ms` when
/// there is nothing new for any of the partitions.
pub async fn serve_fetch(b: &Arc<Broker>, req: ReplicaFetchRequest) -> ReplicaFetchResponse {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
    let mut rx = b.replicas.subscribe_appends(req.replica_id);
    let rate = throttle::limit(b.live_config().leader_replication_throttled_rate);
    loop {
        rx.borrow_and_update();
        // Throttled replicas (reassignment traffic, out of the ISR) get no records
        // while the leader throttle's budget is spent; with no rate set nothing is
        // looked up.
        let throttling = rate.map(|r| (b.cluster(), b.throttles.leader.hold(r, Instant::now())));
        let mut held = false;
        let mut throttled_bytes = 0u64;
        let now = now_ms();
        let mut budget = req.max_bytes.max(1024) as usize;
        let mut out = Vec::with_capacity(req.partitions.len());
        let mut ready = false;
        for (at, pf) in req.partitions.iter().enumerate() {
            let mut pd = empty_answer(&pf.topic, pf.partition);
            pd.request_index = at as u32;
            let part = b
                .replicas
                .topic(&pf.topic)
                .and_then(|t| t.partition(pf.partition).cloned());
            let read = FollowerFetch {
                replica: req.replica_id,
                epoch: pf.leader_epoch,
                fetch_offset: pf.fetch_offset,
                last_fetched_epoch: pf.last_fetched_epoch,
                max_bytes: budget,
            };
            let is_throttled = throttling.as_ref().is_some_and(|(c, _)| {
                let leader = b.node_id();
                throttle::is_throttled(
                    c,
                    &pf.topic,
                    pf.partition,
                    leader,
                    req.replica_id,
                    Side::Leader,
                )
            });
            if is_throttled && throttling.as_ref().is_some_and(|(_, wait)| wait.is_some()) {
                held = true;
                continue;
            }
            let result = match &part {
                Some(p) => serve_partition(p, read, now).await,
                None => Err(ResponseError::NotLeaderOrFollower),
            };
            let (bytes, now_ready) = answer(&mut pd, part.as_deref(), result);
            if is_throttled {
                throttled_bytes += bytes as u64;
            }
            budget = budget.saturating_sub(bytes);
            ready |= now_ready;
            if now_ready || news_for(pf, &pd) {
                out.push(pd);
            }
        }
        if held {
            b.metrics
                .replication_throttle_holds
                .add(1, &[KeyValue::new("side", "leader")]);
        }
        if throttled_bytes > 0 {
            b.throttles.leader.charge(throttled_bytes);
            b.metrics
                .replication_throttled_bytes
                .add(throttled_bytes, &[KeyValue::new("side", "leader")]);
        }
        if ready || tokio::time::Instant::now() >= deadline || budget == 0 {
            return ReplicaFetchResponse { partitions: out };
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            // Timed out: answer with the (empty) reads, which also carry the HW.
            continue;
        }
    }
}
