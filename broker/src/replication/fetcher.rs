//! Follower fetchers: one task per leader broker fetches every partition this
//! broker follows there in one internal RPC, and applies the answer partition by
//! partition on the blocking pool: appending the batches, truncating a divergent
//! tail, restarting a replica that fell behind the leader's log start (with the
//! producer state from the tier when there is one), and following the leader's log
//! start.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use opentelemetry::KeyValue;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tonic::{Request, Status};
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::log::ValidatedRecords;
use crate::partition::Partition;
use crate::quorum::proto::{PartitionData, PartitionFetch, ReplicaFetchRequest};
use crate::replication::throttle::{self, Side};

/// The follower fetchers of this broker, one per leader broker.
#[derive(Default)]
pub struct Fetchers {
    by_leader: Mutex<HashMap<i32, Fetcher>>,
}

struct Fetcher {
    partitions: Arc<Mutex<Vec<Arc<Partition>>>>,
    task: JoinHandle<()>,
}

impl Fetchers {
    /// Points the fetchers at the partitions this broker now follows, per leader.
    pub fn update(&self, broker: &Arc<Broker>, followed: HashMap<i32, Vec<Arc<Partition>>>) {
        let mut by_leader = self.by_leader.lock();
        by_leader.retain(|leader, f| {
            if followed.contains_key(leader) && !f.task.is_finished() {
                true
            } else {
                f.task.abort();
                false
            }
        });
        for (leader, parts) in followed {
            match by_leader.get(&leader) {
                Some(f) => *f.partitions.lock() = parts,
                None => {
                    let partitions = Arc::new(Mutex::new(parts));
                    let task = tokio::spawn(run_fetcher(
                        Arc::downgrade(broker),
                        leader,
                        Arc::clone(&partitions),
                    ));
                    by_leader.insert(leader, Fetcher { partitions, task });
                }
            }
        }
    }

    pub fn stop_all(&self) {
        for (_, f) in self.by_leader.lock().drain() {
            f.task.abort();
        }
    }
}

async fn run_fetcher(
    broker: Weak<Broker>,
    leader: i32,
    partitions: Arc<Mutex<Vec<Arc<Partition>>>>,
) {
    let mut failures: u32 = 0;
    loop {
        let Some(b) = broker.upgrade() else { return };
        // Throttled replicas (reassignment traffic, out of the ISR) wait while the
        // follower throttle's budget is spent; with no rate set nothing is looked up.
        let rate = throttle::limit(b.live_config().follower_replication_throttled_rate);
        let throttling = rate.map(|r| (b.cluster(), b.throttles.follower.hold(r, Instant::now())));
        let node_id = b.node_id();
        let mut held: Option<Duration> = None;
        // What to fetch, each partition's state read under one pair of locks.
        let mut throttled: Vec<bool> = Vec::new();
        let (parts, fetches): (Vec<Arc<Partition>>, Vec<PartitionFetch>) = partitions
            .lock()
            .iter()
            .filter_map(|p| {
                let is_throttled = throttling.as_ref().is_some_and(|(c, _)| {
                    throttle::is_throttled(c, &p.topic, p.index, leader, node_id, Side::Follower)
                });
                if let Some((_, Some(wait))) = throttling.as_ref().filter(|_| is_throttled) {
                    held = Some(*wait);
                    return None;
                }
                let at = p.fetch_position(leader)?;
                let fetch = PartitionFetch {
                    topic: p.topic.to_string(),
                    partition: p.index,
                    leader_epoch: at.leader_epoch,
                    fetch_offset: at.log_end_offset,
                    last_fetched_epoch: at.last_epoch,
                    high_watermark: Some(at.high_watermark),
                    log_start_offset: Some(at.log_start_offset),
                };
                throttled.push(is_throttled);
                Some((Arc::clone(p), fetch))
            })
            .unzip();
        if held.is_some() {
            b.metrics
                .replication_throttle_holds
                .add(1, &[KeyValue::new("side", "follower")]);
        }
        let addr = b
            .cluster()
            .brokers
            .get(&leader)
            .map(|x| x.internal.clone())
            .unwrap_or_default();
        if parts.is_empty() || addr.is_empty() {
            drop(b);
            let pause = held.unwrap_or(Duration::from_millis(100));
            tokio::time::sleep(pause.clamp(Duration::from_millis(10), Duration::from_secs(1)))
                .await;
            continue;
        }
        let request = ReplicaFetchRequest {
            replica_id: b.node_id(),
            max_wait_ms: b.config.replica_fetch_max_wait_ms,
            max_bytes: b.config.replica_fetch_max_bytes,
            partitions: fetches,
        };
        let epochs: Vec<i32> = request.partitions.iter().map(|f| f.leader_epoch).collect();
        let client = b.quorum.peers().client(&addr);
        let wait = Duration::from_millis(b.config.replica_fetch_max_wait_ms.max(0) as u64);
        drop(b);
        let reply = match client {
            Ok(mut c) => {
                let mut req = Request::new(request);
                req.set_timeout(wait + Duration::from_secs(5));
                c.replica_fetch(req).await.map(|r| r.into_inner())
            }
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        };
        let Some(b) = broker.upgrade() else { return };
        match reply {
            Ok(resp) => {
                failures = 0;
                let targets = request_indexes(&parts, &resp.partitions);
                charge(&b, &resp.partitions, &targets, &throttled);
                // Appends that stay page-cache writes apply on this task, as produce
                // appends do: handing every round to `blocking::run` cost a context
                // switch or two per round (bench/RESULTS.md, 2026-12-02 profiles).
                // Rolls, fsyncs, truncations and log-start moves block: off the runtime.
                let inline = applies_in_memory(&parts, &resp.partitions, &targets, now_ms());
                let apply =
                    move || apply_response(&b, &parts, &epochs, resp.partitions, &targets, leader);
                let backoff = if inline {
                    Some(apply())
                } else {
                    crate::blocking::run(apply).await
                };
                let Some(backoff) = backoff else { return };
                if backoff {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    warn!(leader, error = %e.message(), failures, "follower fetch failed; retrying");
                }
                drop(b);
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(5)))).await;
            }
        }
    }
}

/// Counts what a round fetched, and charges the throttled replicas' bytes to the
/// follower throttle.
fn charge(b: &Broker, answers: &[PartitionData], targets: &[Option<usize>], throttled: &[bool]) {
    let (mut all, mut limited) = (0u64, 0u64);
    for (pd, at) in answers.iter().zip(targets) {
        let n = pd.records.len() as u64;
        all += n;
        if at.is_some_and(|at| throttled.get(at).copied().unwrap_or(false)) {
            limited += n;
        }
    }
    b.metrics.replication_bytes_fetched.add(all, &[]);
    if limited > 0 {
        b.throttles.follower.charge(limited);
        b.metrics
            .replication_throttled_bytes
            .add(limited, &[KeyValue::new("side", "follower")]);
    }
}

/// Applies a fetch response from `leader` partition by partition; whether the
/// fetcher should back off (some partition answered an error).
fn apply_response(
    b: &Broker,
    parts: &[Arc<Partition>],
    epochs: &[i32],
    answers: Vec<PartitionData>,
    targets: &[Option<usize>],
    leader: i32,
) -> bool {
    let mut backoff = false;
    for (pd, at) in answers.into_iter().zip(targets) {
        let Some(at) = *at else {
            continue;
        };
        let (p, epoch) = (&parts[at], epochs[at]);
        match apply_fetched(p, pd, leader, epoch, now_ms()) {
            Ok(Applied::Reset { offset }) => restore_producer_state_from_tier(b, p, offset),
            Ok(Applied::Truncated) => b.metrics.replica_truncations.add(1, &[]),
            Ok(Applied::Data) => {}
            Err(code) => {
                debug!(topic = %p.topic, partition = p.index, leader, ?code, "follower fetch error");
                backoff = true;
            }
        }
    }
    backoff
}

/// Whether applying `answers` (for `parts[targets[i]]`) only appends to the page
/// cache: no error or divergence to act on, no segment roll or fsync, no log start
/// to follow.
fn applies_in_memory(
    parts: &[Arc<Partition>],
    answers: &[PartitionData],
    targets: &[Option<usize>],
    now: i64,
) -> bool {
    answers.iter().zip(targets).all(|(pd, at)| {
        at.is_some_and(|at| {
            pd.error_code == 0
                && pd.diverging_epoch < 0
                && parts[at].replicated_append_stays_in_memory(
                    pd.records.len() as u64,
                    pd.log_start_offset,
                    now,
                )
        })
    })
}

/// Which partition of the request (`parts`) each answer is for. The leader says
/// (`request_index`, checked); an older leader answers every partition in request
/// order; otherwise a map by name, built once per response: never a scan per
/// answer, which made a round O(P²) in the partitions followed.
fn request_indexes(parts: &[Arc<Partition>], answers: &[PartitionData]) -> Vec<Option<usize>> {
    let is = |at: usize, pd: &PartitionData| {
        parts
            .get(at)
            .is_some_and(|p| p.index == pd.partition && *p.topic == *pd.topic)
    };
    let mut by_name: Option<HashMap<(Arc<str>, i32), usize>> = None;
    answers
        .iter()
        .enumerate()
        .map(|(i, pd)| {
            let hinted = pd.request_index as usize;
            if is(hinted, pd) {
                return Some(hinted);
            }
            if is(i, pd) {
                return Some(i);
            }
            by_name
                .get_or_insert_with(|| {
                    parts
                        .iter()
                        .enumerate()
                        .map(|(at, p)| ((Arc::clone(&p.topic), p.index), at))
                        .collect()
                })
                .get(&(Arc::from(pd.topic.as_str()), pd.partition))
                .copied()
        })
        .collect()
}

/// After a replica restarted empty at `offset` (its leader's log start), fetches the
/// producer state as of `offset` from the tier, if a tiered segment ends there, and
/// installs it under what was replicated since; in the background, so fetching goes
/// on meanwhile. Without it the replica only knows producers that write again.
fn restore_producer_state_from_tier(b: &Broker, p: &Partition, offset: i64) {
    let Some(tier) = b.tier.clone() else {
        return;
    };
    let Some(topic) = b.replicas.topic(&p.topic) else {
        return;
    };
    let Some(part) = topic.partition(p.index).cloned() else {
        return;
    };
    let topic_id = topic.record.id;
    tokio::spawn(async move {
        let Some(table) = tier.producer_snapshot_at(&topic_id, &part, offset).await else {
            return;
        };
        let producers = table.len();
        let installed =
            tokio::task::spawn_blocking(move || part.install_producer_snapshot(offset, table))
                .await;
        match installed {
            Ok(Ok(true)) => {
                info!(
                    offset,
                    producers, "restored the producer state from the tier's snapshot"
                )
            }
            Ok(Ok(false)) => debug!(offset, "log start moved on; tier snapshot not used"),
            Ok(Err(e)) => warn!(offset, error = %e, "cannot install the tier's producer snapshot"),
            Err(e) => warn!(offset, error = %e, "producer snapshot task failed"),
        }
    });
}

/// What applying one partition of a fetch response did, for the caller's own
/// follow-up (metrics, the tier's producer snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Records appended (or none were new); the high watermark followed the leader's.
    Data,
    /// A divergent tail was cut off, or a tail beyond the leader's high watermark.
    Truncated,
    /// The replica fell behind the leader's log start and restarted empty there.
    Reset { offset: i64 },
}

/// Applies one partition of a fetch response from `leader`, made in `epoch`, on the
/// follower: the follower's whole side of replication, with no dependency on the
/// rest of the broker (the replication simulation drives it directly).
pub(crate) fn apply_fetched(
    p: &Partition,
    pd: PartitionData,
    leader: i32,
    epoch: i32,
    now: i64,
) -> Result<Applied, ResponseError> {
    let code = ResponseError::try_from_code(pd.error_code as i16);
    if let Some(err) = code {
        if err == ResponseError::OffsetOutOfRange {
            let (_, leo) = p.last_epoch_and_end();
            if leo < pd.log_start_offset {
                info!(topic = %p.topic, partition = p.index, start = pd.log_start_offset, "follower fell behind the leader's log start; restarting the replica there");
                p.reset_to(pd.log_start_offset, now, leader, epoch)
                    .map_err(|e| crate::kafka::log_error_code(&e))?;
                return Ok(Applied::Reset {
                    offset: pd.log_start_offset,
                });
            }
            if pd.high_watermark >= 0 && leo > pd.high_watermark {
                warn!(topic = %p.topic, partition = p.index, leo, hw = pd.high_watermark, "follower ahead of the leader; truncating to its high watermark");
                p.truncate_as_follower(pd.high_watermark, leader, epoch)
                    .map_err(|e| crate::kafka::log_error_code(&e))?;
                return Ok(Applied::Truncated);
            }
        }
        return Err(err);
    }
    if pd.diverging_epoch >= 0 {
        let (_, own_end) = p.end_offset_for_epoch(pd.diverging_epoch);
        let to = if own_end >= 0 {
            pd.diverging_end_offset.min(own_end)
        } else {
            pd.diverging_end_offset
        };
        let (_, before) = p.last_epoch_and_end();
        p.truncate_as_follower(to, leader, epoch)
            .map_err(|e| crate::kafka::log_error_code(&e))?;
        info!(topic = %p.topic, partition = p.index, epoch = pd.diverging_epoch, from = before, to, "truncated a divergent log tail");
        return Ok(Applied::Truncated);
    }
    if pd.records.is_empty() {
        let (_, leo) = p.last_epoch_and_end();
        p.follower_hw(pd.high_watermark, leo);
    } else {
        let records = ValidatedRecords::from_replica(pd.records.clone()).map_err(|e| {
            warn!(topic = %p.topic, partition = p.index, error = %e, "corrupt replicated data");
            ResponseError::CorruptMessage
        })?;
        p.append_replicated(records, pd.high_watermark, now, leader, epoch)
            .map_err(|e| {
                warn!(topic = %p.topic, partition = p.index, error = %e, "cannot append replicated data");
                crate::kafka::log_error_code(&e)
            })?;
    }
    match p.follow_log_start(pd.log_start_offset, now, leader, epoch) {
        Ok(0) => {}
        Ok(n) => {
            debug!(topic = %p.topic, partition = p.index, start = pd.log_start_offset, segments = n, "dropped segments below the leader's log start")
        }
        // The data is only redundant, so the next fetch may retry.
        Err(e) => {
            warn!(topic = %p.topic, partition = p.index, error = %e, "cannot follow the leader's log start")
        }
    }
    // DeleteRecords (or retention) may have put the leader's start inside a segment.
    match p.follow_leader_start(pd.log_start_offset, now, leader, epoch) {
        Ok(0) => {}
        Ok(n) => {
            debug!(topic = %p.topic, partition = p.index, start = pd.log_start_offset, segments = n, "followed the leader's log start")
        }
        Err(e) => {
            warn!(topic = %p.topic, partition = p.index, error = %e, "cannot follow the leader's log start")
        }
    }
    Ok(Applied::Data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogConfig, PartitionLog};

    #[test]
    fn answers_are_matched_by_position_and_by_name_when_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<Arc<Partition>> = (0..3)
            .map(|i| {
                let topic = if i == 2 { "b" } else { "a" };
                let log = PartitionLog::open(
                    &dir.path().join(format!("{topic}-{i}")),
                    LogConfig::default(),
                    false,
                    0,
                )
                .unwrap();
                Arc::new(Partition::standalone(Arc::from(topic), i, log))
            })
            .collect();
        let answer = |topic: &str, partition, request_index| PartitionData {
            topic: topic.into(),
            partition,
            request_index,
            ..Default::default()
        };
        // Sparse answers that name their request position; then an older leader's
        // (every partition in order, no position), then one out of order.
        let sparse = [answer("b", 2, 2), answer("a", 0, 0)];
        assert_eq!(request_indexes(&parts, &sparse), vec![Some(2), Some(0)]);
        let in_order = [answer("a", 0, 0), answer("a", 1, 0), answer("b", 2, 0)];
        assert_eq!(
            request_indexes(&parts, &in_order),
            vec![Some(0), Some(1), Some(2)]
        );
        let shuffled = [
            answer("b", 2, 0),
            answer("c", 0, 0),
            answer("a", 1, 7),
            answer("a", 7, 0),
        ];
        assert_eq!(
            request_indexes(&parts, &shuffled),
            vec![Some(2), None, Some(1), None]
        );
    }
}
