//! Cluster membership and partition replication:
//! - registration and heartbeats of this broker through the metadata quorum;
//! - the controller loop (on the Raft leader): fencing silent brokers, electing
//!   leaders from the ISR, creating `__consumer_offsets`, moving reassignments and
//!   drains forward, preferred-leader election;
//! - leaders proposing ISR changes from their followers' progress;
//! - follower fetchers (one task per leader broker, batching every partition it
//!   follows there) and the leader's side of a follower fetch;
//! - the internal gRPC service carrying Raft, forwarded proposals and fetches.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::broker::{now_ms, Broker};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::log::ReadMode;
use crate::log::ValidatedRecords;
use crate::metadata::cluster::{self, Command};
use crate::metadata::TopicRecord;
use crate::partition::{FollowerFetch, FollowerRead, Partition, Role};
use crate::quorum::proto::internal_server::Internal;
use crate::quorum::proto::{
    PartitionData, PartitionFetch, RaftMessage, ReplicaFetchRequest, ReplicaFetchResponse,
};

pub use crate::quorum::proto::internal_server::InternalServer;

/// Spawns the reconcile-on-change, heartbeat, controller and ISR tasks.
pub fn spawn_cluster_tasks(broker: &Arc<Broker>) {
    // Reconcile whenever the applied metadata changes.
    let weak = Arc::downgrade(broker);
    let mut rx = broker.quorum.subscribe();
    tokio::spawn(async move {
        loop {
            {
                let Some(b) = weak.upgrade() else { return };
                b.reconcile().await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    let weak = Arc::downgrade(broker);
    let every = Duration::from_millis(broker.config.broker_heartbeat_interval_ms.max(50));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            heartbeat(&b).await;
        }
    });
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_since: Option<i64> = None;
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            if !b.quorum.is_leader() {
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert_with(now_ms);
            controller_round(&b, since).await;
        }
    });
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(b) = weak.upgrade() else { return };
            propose_isr_changes(&b).await;
        }
    });
}

/// Registers this broker (first time, or after being forgotten) or heartbeats.
async fn heartbeat(b: &Arc<Broker>) {
    let now = now_ms();
    let me = b.node_id();
    let state = b.cluster();
    let (host, port) = b.config.advertised();
    let internal = b.config.advertised_internal();
    let known = state.brokers.get(&me).is_some_and(|x| {
        x.host == host && x.port == port && x.internal == internal && x.rack == b.config.rack
    });
    let cmd = if b.is_registered() && known {
        Command::Heartbeat {
            id: me,
            now_ms: now,
        }
    } else {
        Command::RegisterBroker {
            id: me,
            host,
            port,
            rack: b.config.rack.clone(),
            internal,
            now_ms: now,
        }
    };
    let sent = std::time::Instant::now();
    match b.quorum.propose(cmd).await {
        Ok((index, _)) => {
            if !b.is_registered() && b.quorum.wait_applied(index, Duration::from_secs(10)).await {
                b.set_registered();
                b.reconcile().await;
            }
            if b.is_registered() && b.wait_reconciled(index).await {
                b.renew_lease(sent);
            }
        }
        Err(e) => debug!(error = %e, "heartbeat not committed"),
    }
}

/// One round of the controller's duties; runs only on the Raft leader.
async fn controller_round(b: &Arc<Broker>, leader_since: i64) {
    let state = b.cluster();
    let now = now_ms();
    let learners: Vec<(u64, String)> = state
        .brokers
        .values()
        .filter(|x| !x.internal.is_empty())
        .map(|x| (x.id as u64, x.internal.clone()))
        .collect();
    b.quorum.sync_learners(&learners).await;
    let mut cmds = Vec::new();
    // A new controller gives brokers one session to find it before fencing anyone.
    if now - leader_since > b.config.broker_session_timeout_ms {
        // The controller is alive by definition: a slow heartbeat commit under load
        // must never make it fence itself (on a single broker that would take every
        // partition offline).
        let mut view = (*state).clone();
        if let Some(me) = view.brokers.get_mut(&b.node_id()) {
            me.last_heartbeat_ms = now;
        }
        cmds.extend(cluster::fence_and_elect(
            &view,
            now,
            b.config.broker_session_timeout_ms,
        ));
    }
    if cmds.is_empty() {
        cmds.extend(cluster::progress_actions(&state));
    }
    if !state.topics.contains_key(OFFSETS_TOPIC) {
        if let Some(cmd) = offsets_topic_command(b, &state) {
            cmds.push(cmd);
        }
    }
    for cmd in cmds {
        let what = format!("{cmd:?}");
        match b.quorum.propose_as_leader(cmd).await {
            Ok(_) => info!(command = %truncate(&what, 200), "controller applied"),
            Err(e) => {
                warn!(command = %truncate(&what, 200), error = %e, "controller command failed")
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Creates `__consumer_offsets` once enough brokers registered for its replication
/// factor (capped at the voter count, so a single broker gets RF 1).
fn offsets_topic_command(b: &Broker, state: &cluster::ClusterState) -> Option<Command> {
    let voters = b.config.voters().map(|v| v.len()).unwrap_or(1);
    let rf = (b.config.offsets_topic_replication_factor as usize).min(voters);
    let alive = state
        .brokers
        .values()
        .filter(|x| x.status == cluster::BrokerStatus::Alive)
        .count();
    if alive < rf {
        return None;
    }
    let partitions = b.config.offsets_topic_partitions;
    let assignment = cluster::assign_replicas(state, partitions, rf as i16, 0).ok()?;
    let mut configs = std::collections::BTreeMap::new();
    configs.insert(
        "segment.bytes".to_string(),
        b.config.offsets_segment_bytes.to_string(),
    );
    configs.insert("retention.ms".to_string(), "-1".to_string());
    configs.insert("retention.bytes".to_string(), "-1".to_string());
    configs.insert(
        "min.insync.replicas".to_string(),
        if rf >= 3 { "2" } else { "1" }.to_string(),
    );
    Some(Command::CreateTopic {
        record: TopicRecord {
            name: OFFSETS_TOPIC.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf as i16,
            configs,
            internal: true,
        },
        assignment,
    })
}

/// Leaders propose ISR shrinks and expansions their followers' progress calls for.
async fn propose_isr_changes(b: &Arc<Broker>) {
    let now = now_ms();
    let lag = b.config.replica_lag_time_max_ms;
    for t in b.all_topics() {
        for p in t.local() {
            let Some((leader_epoch, isr)) = p.isr_change(now, lag) else {
                continue;
            };
            info!(topic = %p.topic, partition = p.index, ?isr, "proposing ISR change");
            let cmd = Command::ChangeIsr {
                topic: p.topic.to_string(),
                partition: p.index,
                leader_epoch,
                isr,
            };
            if let Err(e) = b.quorum.propose(cmd).await {
                debug!(topic = %p.topic, partition = p.index, error = %e, "ISR change refused");
            }
        }
    }
}

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
        let parts: Vec<Arc<Partition>> = partitions
            .lock()
            .iter()
            .filter(|p| p.role() == Role::Follower { leader })
            .cloned()
            .collect();
        let addr = b
            .cluster()
            .brokers
            .get(&leader)
            .map(|x| x.internal.clone())
            .unwrap_or_default();
        if parts.is_empty() || addr.is_empty() {
            drop(b);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let request = ReplicaFetchRequest {
            replica_id: b.node_id(),
            max_wait_ms: b.config.replica_fetch_max_wait_ms,
            max_bytes: b.config.replica_fetch_max_bytes,
            partitions: parts
                .iter()
                .map(|p| {
                    let (last_epoch, leo) = p.last_epoch_and_end();
                    PartitionFetch {
                        topic: p.topic.to_string(),
                        partition: p.index,
                        leader_epoch: p.leader_epoch(),
                        fetch_offset: leo,
                        last_fetched_epoch: last_epoch,
                    }
                })
                .collect(),
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
                // Appends, truncations and their fsyncs: on the blocking pool.
                let backoff = crate::blocking::run(move || {
                    let mut backoff = false;
                    for pd in resp.partitions {
                        let Some((p, epoch)) = parts
                            .iter()
                            .zip(&epochs)
                            .find(|(p, _)| p.index == pd.partition && *p.topic == *pd.topic)
                        else {
                            continue;
                        };
                        if let Err(code) = apply_fetched(&b, p, pd, leader, *epoch) {
                            debug!(topic = %p.topic, partition = p.index, leader, ?code, "follower fetch error");
                            backoff = true;
                        }
                    }
                    backoff
                })
                .await;
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

/// After a replica restarted empty at `offset` (its leader's log start), fetches the
/// producer state as of `offset` from the tier, if a tiered segment ends there, and
/// installs it under what was replicated since; in the background, so fetching goes
/// on meanwhile. Without it the replica only knows producers that write again.
fn restore_producer_state_from_tier(b: &Broker, p: &Partition, offset: i64) {
    let Some(tier) = b.tier.clone() else {
        return;
    };
    let Some(topic) = b.topic(&p.topic) else {
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

/// Applies one partition of a fetch response on the follower.
fn apply_fetched(
    b: &Broker,
    p: &Partition,
    pd: PartitionData,
    leader: i32,
    epoch: i32,
) -> Result<(), ResponseError> {
    let now = now_ms();
    let code = ResponseError::try_from_code(pd.error_code as i16);
    if let Some(err) = code {
        if err == ResponseError::OffsetOutOfRange {
            let (_, leo) = p.last_epoch_and_end();
            if leo < pd.log_start_offset {
                info!(topic = %p.topic, partition = p.index, start = pd.log_start_offset, "follower fell behind the leader's log start; restarting the replica there");
                p.reset_to(pd.log_start_offset, now, leader, epoch)
                    .map_err(|e| crate::kafka::log_error_code(&e))?;
                restore_producer_state_from_tier(b, p, pd.log_start_offset);
                return Ok(());
            }
            if pd.high_watermark >= 0 && leo > pd.high_watermark {
                warn!(topic = %p.topic, partition = p.index, leo, hw = pd.high_watermark, "follower ahead of the leader; truncating to its high watermark");
                p.truncate_as_follower(pd.high_watermark, leader, epoch)
                    .map_err(|e| crate::kafka::log_error_code(&e))?;
                return Ok(());
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
        b.metrics.replica_truncations.add(1, &[]);
        return Ok(());
    }
    if pd.records.is_empty() {
        let (_, leo) = p.last_epoch_and_end();
        p.follower_hw(pd.high_watermark, leo);
    } else {
        let records = ValidatedRecords::new(&pd.records, usize::MAX).map_err(|e| {
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
    Ok(())
}

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

/// The leader's side of a follower fetch, long-polling up to `max_wait_ms` when
/// there is nothing new for any of the partitions.
pub async fn serve_fetch(b: &Arc<Broker>, req: ReplicaFetchRequest) -> ReplicaFetchResponse {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
    let mut rx = b.appended.subscribe();
    loop {
        rx.borrow_and_update();
        let now = now_ms();
        let mut budget = req.max_bytes.max(1024) as usize;
        let mut out = Vec::with_capacity(req.partitions.len());
        let mut ready = false;
        for pf in &req.partitions {
            let mut pd = PartitionData {
                topic: pf.topic.clone(),
                partition: pf.partition,
                high_watermark: -1,
                log_start_offset: -1,
                diverging_epoch: -1,
                diverging_end_offset: -1,
                ..Default::default()
            };
            let part = b
                .topic(&pf.topic)
                .and_then(|t| t.partition(pf.partition).cloned());
            let read = FollowerFetch {
                replica: req.replica_id,
                epoch: pf.leader_epoch,
                fetch_offset: pf.fetch_offset,
                last_fetched_epoch: pf.last_fetched_epoch,
                max_bytes: budget,
            };
            let result = match &part {
                Some(p) => serve_partition(p, read, now).await,
                None => Err(ResponseError::NotLeaderOrFollower),
            };
            match result {
                Ok((FollowerRead::Data(snap), data)) => {
                    pd.high_watermark = snap.high_watermark;
                    pd.log_start_offset = snap.log_start_offset;
                    match data {
                        Ok(data) => {
                            budget = budget.saturating_sub(data.len());
                            if !data.is_empty() {
                                ready = true;
                            }
                            pd.records = data;
                        }
                        Err(e) => {
                            warn!(topic = %pf.topic, partition = pf.partition, error = %e, "cannot read for a follower");
                            pd.error_code = ResponseError::KafkaStorageError.code() as i32;
                            ready = true;
                        }
                    }
                }
                Ok((FollowerRead::Diverging { epoch, end_offset }, _)) => {
                    pd.diverging_epoch = epoch;
                    pd.diverging_end_offset = end_offset;
                    ready = true;
                }
                Err(e) => {
                    if let Some(p) = &part {
                        pd.high_watermark = p.high_watermark();
                        pd.log_start_offset = p.log_start_offset();
                    }
                    pd.error_code = e.code() as i32;
                    ready = true;
                }
            }
            out.push(pd);
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

/// The internal gRPC service.
pub struct InternalService {
    broker: Arc<Broker>,
}

impl InternalService {
    pub fn new(broker: Arc<Broker>) -> Self {
        InternalService { broker }
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn raft(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let payload = self
            .broker
            .quorum
            .handle_raft(&m.kind, &m.payload)
            .await
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(RaftMessage {
            kind: m.kind,
            payload: Bytes::from(payload),
        }))
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let reply = self.broker.quorum.handle_propose(&m.payload).await;
        let payload = serde_json::to_vec(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            kind: "propose".into(),
            payload: payload.into(),
        }))
    }

    async fn replica_fetch(
        &self,
        req: Request<ReplicaFetchRequest>,
    ) -> Result<Response<ReplicaFetchResponse>, Status> {
        Ok(Response::new(
            serve_fetch(&self.broker, req.into_inner()).await,
        ))
    }
}
