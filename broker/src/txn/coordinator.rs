//! The transaction coordinator. For each `transactional.id` whose
//! `__transaction_state` partition this broker leads it keeps the [`TxnMetadata`],
//! and every request that changes it runs the same three steps under the id's own
//! (async) lock: decide with the pure functions of [`super::state`], append the new
//! state and wait until the partition's in-sync replicas have it, then adopt it and
//! answer. A decided transaction (PrepareCommit / PrepareAbort) becomes a
//! [`Completion`] for the marker writer; once every partition has its marker the
//! writer calls [`TransactionCoordinator::finish`], which persists the Complete state.
//! A broker that starts leading a partition replays it and hands the transactions it
//! finds prepared to the marker writer again, so a coordinator failover never leaves
//! a transaction half-written.
//!
//! Locks: the coordinator's map (a synchronous mutex) is never held across an await;
//! an id's lock is, but only that id's requests wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::state::{self, EndDecision, InitDecision, TxnMetadata, TxnState};
use super::{partition_for, store, TXN_STATE_TOPIC};
use crate::log::ValidatedRecords;
use crate::partition::Partition;
use crate::replicas::ReplicaManager;

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// Partitions of `__transaction_state`.
    pub partitions: i32,
    /// Largest `transaction.timeout.ms` a producer may ask for.
    pub max_timeout_ms: i32,
    /// An idle `transactional.id` is forgotten after this long.
    pub id_expiration_ms: i64,
}

/// How long a state change may wait for the in-sync replicas of its partition.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long AddPartitionsToTxn waits for the producer's previous transaction to
/// complete before it answers CONCURRENT_TRANSACTIONS.
const COMPLETION_WAIT: Duration = Duration::from_secs(1);

/// The markers a decided transaction still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The leader epoch of the `__transaction_state` partition that decided it:
    /// partition leaders refuse markers of an older coordinator.
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

/// Counters for the metrics.
#[derive(Debug, Default)]
pub struct TxnCounters {
    pub started: AtomicU64,
    pub committed: AtomicU64,
    pub aborted: AtomicU64,
    pub timed_out: AtomicU64,
}

type Slot = Arc<tokio::sync::Mutex<Option<TxnMetadata>>>;

#[derive(Clone)]
struct Owned {
    partition: Arc<Partition>,
    leader_epoch: i32,
}

#[derive(Default)]
struct CoordState {
    /// `__transaction_state` partitions led here and loaded.
    owned: HashMap<i32, Owned>,
    /// The ids of those partitions (`None` once forgotten).
    txns: HashMap<String, Slot>,
}

pub struct TransactionCoordinator {
    pub config: TxnConfig,
    pub counters: TxnCounters,
    state: Mutex<CoordState>,
    completions: mpsc::UnboundedSender<Completion>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// Woken whenever a transaction completes (its markers are all written).
    completed: tokio::sync::Notify,
}

impl TransactionCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        TransactionCoordinator {
            config,
            counters: TxnCounters::default(),
            state: Mutex::new(CoordState::default()),
            completions: tx,
            receiver: Mutex::new(Some(rx)),
            completed: tokio::sync::Notify::new(),
        }
    }

    /// The decided transactions, for the marker writer (taken once, by the
    /// application).
    pub fn take_completions(&self) -> Option<mpsc::UnboundedReceiver<Completion>> {
        self.receiver.lock().take()
    }

    fn index_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.partitions)
    }

    /// Whether this broker coordinates `transactional_id` now.
    pub fn is_coordinator(&self, transactional_id: &str) -> bool {
        let index = self.index_of(transactional_id);
        self.state.lock().owned.contains_key(&index)
    }

    /// Follows `__transaction_state` leadership: loads the partitions this broker now
    /// leads (and resumes the transactions they hold prepared), forgets the others.
    pub fn set_owned(&self, replicas: &ReplicaManager, led: &HashSet<i32>) {
        let topic = replicas.topic(TXN_STATE_TOPIC);
        let led: HashMap<i32, Arc<Partition>> = led
            .iter()
            .filter_map(|i| Some((*i, Arc::clone(topic.as_ref()?.partition(*i)?))))
            .collect();
        let n = self.config.partitions;
        let gained: Vec<(i32, Arc<Partition>)> = {
            let mut st = self.state.lock();
            let owned = st
                .owned
                .iter()
                .map(|(i, o)| (*i, Arc::clone(&o.partition), o.leader_epoch));
            let (lost, gained) = crate::replicas::leadership_delta(owned, &led);
            if !lost.is_empty() {
                for i in &lost {
                    st.owned.remove(i);
                }
                st.txns
                    .retain(|id, _| !lost.contains(&partition_for(id, n)));
                info!(partitions = ?lost, "no longer coordinating the transactions of these partitions");
            }
            gained
        };
        for (index, p) in gained {
            let epoch = p.leader_epoch();
            let loaded = match store::replay(&p) {
                Ok(l) => l,
                Err(e) => {
                    warn!(partition = index, error = %e, "cannot load transaction state partition");
                    continue;
                }
            };
            let mut st = self.state.lock();
            if !p.is_leader() || p.leader_epoch() != epoch {
                warn!(
                    partition = index,
                    "transaction state partition changed leadership while loading"
                );
                continue;
            }
            let mut resumed = 0;
            for (id, meta) in loaded {
                if let Some(c) = completion_of(&id, &meta, epoch) {
                    resumed += 1;
                    let _ = self.completions.send(c);
                }
                st.txns
                    .insert(id, Arc::new(tokio::sync::Mutex::new(Some(meta))));
            }
            st.owned.insert(
                index,
                Owned {
                    partition: p,
                    leader_epoch: epoch,
                },
            );
            info!(
                partition = index,
                resumed, "coordinating the transactions of partition"
            );
        }
    }

    /// The id's slot and its partition, if this broker coordinates it.
    fn slot(&self, transactional_id: &str) -> Result<(Slot, Owned), ResponseError> {
        let index = self.index_of(transactional_id);
        let mut st = self.state.lock();
        let owned = st
            .owned
            .get(&index)
            .cloned()
            .ok_or(ResponseError::NotCoordinator)?;
        let slot = Arc::clone(
            st.txns
                .entry(transactional_id.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))),
        );
        Ok((slot, owned))
    }

    /// Appends a state change and waits until the partition's ISR has it.
    async fn persist(
        &self,
        owned: &Owned,
        transactional_id: &str,
        meta: Option<&TxnMetadata>,
        now: i64,
    ) -> Result<(), ResponseError> {
        let raw = store::encode(transactional_id, meta, now).map_err(|e| {
            warn!(error = %e, "cannot encode transaction state");
            ResponseError::UnknownServerError
        })?;
        let records = ValidatedRecords::new(&raw, usize::MAX)
            .map_err(|_| ResponseError::UnknownServerError)?;
        let p = Arc::clone(&owned.partition);
        let info = crate::blocking::run(move || p.append(records, now))
            .await
            .ok_or(ResponseError::CoordinatorNotAvailable)?
            .map_err(|e| match e {
                crate::log::LogError::NotLeader => ResponseError::NotCoordinator,
                e => {
                    warn!(error = %e, "cannot write to __transaction_state");
                    ResponseError::CoordinatorNotAvailable
                }
            })?;
        if info.leader_epoch != owned.leader_epoch {
            return Err(ResponseError::NotCoordinator);
        }
        owned
            .partition
            .wait_for_hw(info.last_offset + 1, WRITE_TIMEOUT)
            .await
            .map_err(|e| match e {
                ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
                _ => ResponseError::NotCoordinator,
            })?;
        if owned.partition.leader_epoch() != owned.leader_epoch {
            return Err(ResponseError::NotCoordinator);
        }
        Ok(())
    }

    /// InitProducerId with a `transactional.id`: `(producer id, epoch)`. An open
    /// transaction of an older instance is aborted first (the answer is then
    /// CONCURRENT_TRANSACTIONS, which clients retry until the abort is done).
    /// `new_id` allocates a producer id; it is only called when one is needed.
    pub async fn init_producer_id<F>(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now: i64,
        new_id: impl FnOnce() -> F,
    ) -> Result<(i64, i16), ResponseError>
    where
        F: std::future::Future<Output = Option<i64>>,
    {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let (slot, owned) = self.slot(transactional_id)?;
        let mut cur = slot.lock().await;
        let needs_id = cur
            .as_ref()
            .is_none_or(|m| m.producer_epoch >= i16::MAX - 1);
        let id = if needs_id { new_id().await } else { None };
        let decision = state::init_producer_id(cur.as_ref(), timeout_ms, expected, now, || id)?;
        match decision {
            InitDecision::Ready(next) => {
                if cur.as_ref() != Some(&next) {
                    self.persist(&owned, transactional_id, Some(&next), now)
                        .await?;
                }
                let out = (next.producer_id, next.producer_epoch);
                *cur = Some(next);
                Ok(out)
            }
            InitDecision::AbortFirst(next) => {
                self.persist(&owned, transactional_id, Some(&next), now)
                    .await?;
                info!(
                    transactional_id,
                    producer_id = next.producer_id,
                    epoch = next.producer_epoch,
                    "fenced the previous producer instance; aborting its open transaction"
                );
                self.decided(transactional_id, &next, owned.leader_epoch);
                *cur = Some(next);
                Err(ResponseError::ConcurrentTransactions)
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition).
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Result<(), ResponseError> {
        let deadline = tokio::time::Instant::now() + COMPLETION_WAIT;
        let (owned, mut cur) = loop {
            let (slot, owned) = self.slot(transactional_id)?;
            let cur = slot.lock_owned().await;
            let Some(meta) = cur.as_ref() else {
                return Err(ResponseError::InvalidProducerIdMapping);
            };
            state::check_producer(meta, producer_id, epoch)?;
            // The producer's previous transaction is still writing its markers (a
            // millisecond or so): wait for its Complete state rather than answer
            // CONCURRENT_TRANSACTIONS, which clients retry only after a backoff
            // (20 ms and more), the largest cost of short transactions.
            if meta.state.is_preparing() && tokio::time::Instant::now() < deadline {
                let completed = self.completed.notified();
                tokio::pin!(completed);
                completed.as_mut().enable();
                drop(cur);
                let _ = tokio::time::timeout_at(deadline, completed).await;
                continue;
            }
            break (owned, cur);
        };
        let Some(meta) = cur.as_ref() else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        let Some(next) = state::add_partitions(meta, producer_id, epoch, partitions, now)? else {
            return Ok(());
        };
        let starts = meta.state != TxnState::Ongoing;
        self.persist(&owned, transactional_id, Some(&next), now)
            .await?;
        if starts {
            self.counters.started.fetch_add(1, Ordering::Relaxed);
        }
        *cur = Some(next);
        Ok(())
    }

    /// Whether `partition` is part of the producer's open transaction (a leader
    /// verifying a transactional write, KIP-890 part 1).
    pub async fn verify_partition(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<bool, ResponseError> {
        let (slot, _) = self.slot(transactional_id)?;
        let cur = slot.lock().await;
        let Some(meta) = cur.as_ref() else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        state::check_producer(meta, producer_id, epoch)?;
        Ok(meta.state == TxnState::Ongoing && meta.partitions.contains(partition))
    }

    /// EndTxn: persists the decision and hands the markers to the writer; the
    /// answer does not wait for the markers (as in Kafka).
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<(), ResponseError> {
        let (slot, owned) = self.slot(transactional_id)?;
        let mut cur = slot.lock().await;
        let Some(meta) = cur.as_ref() else {
            return Err(ResponseError::InvalidProducerIdMapping);
        };
        match state::end_txn(meta, producer_id, epoch, commit, now)? {
            EndDecision::AlreadyDone => Ok(()),
            EndDecision::Prepare(next) => {
                self.persist(&owned, transactional_id, Some(&next), now)
                    .await?;
                self.decided(transactional_id, &next, owned.leader_epoch);
                if !next.state.is_preparing() {
                    self.count_end(commit);
                }
                *cur = Some(next);
                Ok(())
            }
        }
    }

    fn count_end(&self, commit: bool) {
        let c = if commit {
            &self.counters.committed
        } else {
            &self.counters.aborted
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a prepared transaction to the marker writer.
    fn decided(&self, transactional_id: &str, meta: &TxnMetadata, coordinator_epoch: i32) {
        if let Some(c) = completion_of(transactional_id, meta, coordinator_epoch) {
            let _ = self.completions.send(c);
        }
    }

    /// Whether the completion's coordinator is still this broker, in the same epoch
    /// (the marker writer gives up on one whose coordinator moved: the new one
    /// resumes it).
    pub fn still_coordinating(&self, c: &Completion) -> bool {
        let index = self.index_of(&c.transactional_id);
        self.state
            .lock()
            .owned
            .get(&index)
            .is_some_and(|o| o.leader_epoch == c.coordinator_epoch && o.partition.is_leader())
    }

    /// Every marker of `c` is written: persists the Complete state.
    pub async fn finish(&self, c: &Completion, now: i64) -> Result<(), ResponseError> {
        let (slot, owned) = self.slot(&c.transactional_id)?;
        if owned.leader_epoch != c.coordinator_epoch {
            return Err(ResponseError::NotCoordinator);
        }
        let mut cur = slot.lock().await;
        let Some(meta) = cur.as_ref() else {
            return Ok(());
        };
        let same = meta.state.is_preparing()
            && meta.producer_id == c.producer_id
            && meta.producer_epoch == c.producer_epoch;
        if !same {
            return Ok(());
        }
        let next = state::complete(meta, now);
        self.persist(&owned, &c.transactional_id, Some(&next), now)
            .await?;
        self.count_end(c.commit);
        info!(transactional_id = %c.transactional_id, producer_id = c.producer_id,
            commit = c.commit, partitions = c.partitions.len(), "transaction completed");
        *cur = Some(next);
        self.completed.notify_waiters();
        Ok(())
    }

    /// Aborts the open transaction of `transactional_id` on an operator's request,
    /// as a timeout would: the epoch is bumped, so its producer is fenced. The
    /// returned state is PrepareAbort (the markers follow).
    pub async fn abort(
        &self,
        transactional_id: &str,
        now: i64,
    ) -> Result<TxnMetadata, ResponseError> {
        let (slot, owned) = self.slot(transactional_id)?;
        let mut cur = slot.lock().await;
        let meta = cur.as_ref().ok_or(ResponseError::TransactionalIdNotFound)?;
        let next = state::abort_open(meta, now).ok_or(ResponseError::InvalidTxnState)?;
        self.persist(&owned, transactional_id, Some(&next), now)
            .await?;
        info!(transactional_id = %transactional_id, producer_id = next.producer_id,
            "aborting a transaction on an admin request");
        self.decided(transactional_id, &next, owned.leader_epoch);
        *cur = Some(next.clone());
        Ok(next)
    }

    /// Every id's slot, taken out of the map's lock.
    fn slots(&self) -> Vec<(String, Slot)> {
        self.state
            .lock()
            .txns
            .iter()
            .map(|(id, s)| (id.clone(), Arc::clone(s)))
            .collect()
    }

    /// Aborts open transactions past their timeout (fencing their producer) and
    /// forgets ids idle for `id_expiration_ms`. Runs every second or so.
    pub async fn tick(&self, now: i64) {
        let slots = self.slots();
        for (id, slot) in slots {
            let Ok(mut cur) = slot.try_lock() else {
                continue; // a request is changing it right now
            };
            let Some(meta) = cur.as_ref() else {
                continue;
            };
            let Ok((_, owned)) = self.slot(&id) else {
                continue;
            };
            if let Some(next) = state::expire_open(meta, now) {
                match self.persist(&owned, &id, Some(&next), now).await {
                    Ok(()) => {
                        info!(transactional_id = %id, producer_id = next.producer_id,
                            "aborting a transaction past its timeout");
                        self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                        self.decided(&id, &next, owned.leader_epoch);
                        *cur = Some(next);
                    }
                    Err(e) => {
                        warn!(transactional_id = %id, error = ?e, "cannot abort a timed-out transaction")
                    }
                }
            } else if state::expired_id(meta, now, self.config.id_expiration_ms) {
                match self.persist(&owned, &id, None, now).await {
                    Ok(()) => {
                        info!(transactional_id = %id, "forgot an idle transactional id");
                        *cur = None;
                    }
                    Err(e) => {
                        warn!(transactional_id = %id, error = ?e, "cannot expire a transactional id")
                    }
                }
            }
        }
        // Forgotten ids leave the map once nobody holds their slot.
        self.state
            .lock()
            .txns
            .retain(|_, s| Arc::strong_count(s) > 1 || s.try_lock().map_or(true, |g| g.is_some()));
    }

    /// The state of one id, if this broker coordinates it.
    pub async fn describe(
        &self,
        transactional_id: &str,
    ) -> Result<Option<TxnMetadata>, ResponseError> {
        let index = self.index_of(transactional_id);
        let slot = {
            let st = self.state.lock();
            if !st.owned.contains_key(&index) {
                return Err(ResponseError::NotCoordinator);
            }
            st.txns.get(transactional_id).cloned()
        };
        match slot {
            Some(s) => Ok(s.lock().await.clone()),
            None => Ok(None),
        }
    }

    /// Every id coordinated here with its state.
    pub async fn list(&self) -> Vec<(String, TxnMetadata)> {
        let slots = self.slots();
        let mut out = Vec::new();
        for (id, s) in slots {
            if let Some(m) = s.lock().await.clone() {
                out.push((id, m));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Open transactions coordinated here (a gauge).
    pub fn open_count(&self) -> u64 {
        self.state
            .lock()
            .txns
            .values()
            .filter(|s| {
                s.try_lock()
                    .is_ok_and(|m| m.as_ref().is_some_and(|m| !m.state.is_idle()))
            })
            .count() as u64
    }
}

/// The markers a stored state still needs, if it is a prepared transaction.
fn completion_of(
    transactional_id: &str,
    meta: &TxnMetadata,
    coordinator_epoch: i32,
) -> Option<Completion> {
    meta.state.is_preparing().then(|| Completion {
        transactional_id: transactional_id.to_string(),
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        coordinator_epoch,
        commit: meta.state == TxnState::PrepareCommit,
        partitions: meta.partitions.iter().cloned().collect(),
    })
}
