//! The state machine of one `transactional.id`, as pure functions: given the stored
//! metadata and a request, the metadata to persist next (or the Kafka error). The
//! coordinator persists what these return before it acts on it or answers.
//!
//! ```text
//! Empty ──AddPartitions──▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲                        │  └────EndTxn(abort)/timeout/fence──▶ PrepareAbort ──markers──▶ CompleteAbort
//!   └──── (InitProducerId) ◀─┴── CompleteCommit / CompleteAbort ──AddPartitions──▶ Ongoing
//! ```

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The names Kafka's DescribeTransactions / ListTransactions use.
    pub fn kafka_name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Markers are being written: requests that change the transaction wait.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// No transaction is open: a new one may start, the id may expire.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// What the coordinator stores for one `transactional.id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the open transaction (markers go to each).
    pub partitions: BTreeSet<(String, i32)>,
    /// When the open transaction started (its first AddPartitions), -1 when none.
    pub txn_start_ms: i64,
    pub last_update_ms: i64,
}

/// The largest producer epoch; past it a new producer id is needed.
const MAX_EPOCH: i16 = i16::MAX - 1;

/// What InitProducerId does for a `transactional.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDecision {
    /// Persist this and answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// An open transaction must be aborted first: persist this (PrepareAbort with
    /// the fencing epoch), write its markers, complete it, then ask again.
    AbortFirst(TxnMetadata),
}

/// InitProducerId: a new producer id for a new `transactional.id`, else an epoch bump
/// that fences every older instance (`new_id` is called when the epoch is exhausted
/// or the id is new). `expected` is the producer id and epoch a client that asks to
/// keep its id (KIP-360) sends; they must match the stored ones.
pub fn init_producer_id(
    current: Option<&TxnMetadata>,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    now: i64,
    new_id: impl FnOnce() -> Option<i64>,
) -> Result<InitDecision, ResponseError> {
    let Some(cur) = current else {
        let id = new_id().ok_or(ResponseError::CoordinatorNotAvailable)?;
        return Ok(InitDecision::Ready(TxnMetadata {
            producer_id: id,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now,
        }));
    };
    if let Some((pid, epoch)) = expected {
        // A retry after the bump it asked for already happened is answered again.
        let retried = pid == cur.producer_id && epoch.checked_add(1) == Some(cur.producer_epoch);
        if retried && cur.state.is_idle() {
            return Ok(InitDecision::Ready(cur.clone()));
        }
        if pid != cur.producer_id || epoch != cur.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
    }
    if cur.state.is_preparing() {
        return Err(ResponseError::ConcurrentTransactions);
    }
    let mut next = cur.clone();
    next.timeout_ms = timeout_ms;
    next.last_update_ms = now;
    if cur.state == TxnState::Ongoing {
        // Fence the running instance: its batches and its EndTxn carry the old epoch.
        next.producer_epoch = cur.producer_epoch.saturating_add(1).min(MAX_EPOCH);
        next.state = TxnState::PrepareAbort;
        return Ok(InitDecision::AbortFirst(next));
    }
    if cur.producer_epoch >= MAX_EPOCH {
        next.producer_id = new_id().ok_or(ResponseError::CoordinatorNotAvailable)?;
        next.producer_epoch = 0;
    } else {
        next.producer_epoch = cur.producer_epoch + 1;
    }
    next.state = TxnState::Empty;
    next.partitions.clear();
    next.txn_start_ms = -1;
    Ok(InitDecision::Ready(next))
}

/// Checks that a request comes from the current instance of the producer.
pub fn check_producer(
    cur: &TxnMetadata,
    producer_id: i64,
    epoch: i16,
) -> Result<(), ResponseError> {
    if producer_id != cur.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch < cur.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if epoch > cur.producer_epoch {
        return Err(ResponseError::InvalidProducerEpoch);
    }
    Ok(())
}

/// AddPartitionsToTxn / AddOffsetsToTxn: the transaction with these partitions added
/// (it starts now if none was open). `None` when nothing changes (all were added).
pub fn add_partitions(
    cur: &TxnMetadata,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now: i64,
) -> Result<Option<TxnMetadata>, ResponseError> {
    check_producer(cur, producer_id, epoch)?;
    if cur.state.is_preparing() {
        return Err(ResponseError::ConcurrentTransactions);
    }
    if cur.state == TxnState::Ongoing && partitions.iter().all(|p| cur.partitions.contains(p)) {
        return Ok(None);
    }
    let mut next = cur.clone();
    if !cur.state.is_idle() {
        next.partitions.extend(partitions.iter().cloned());
    } else {
        next.partitions = partitions.iter().cloned().collect();
        next.txn_start_ms = now;
    }
    next.state = TxnState::Ongoing;
    next.last_update_ms = now;
    Ok(Some(next))
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDecision {
    /// Persist this Prepare state, answer, then write the markers.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn that already completed: answer success again.
    AlreadyDone,
}

/// EndTxn(commit or abort).
pub fn end_txn(
    cur: &TxnMetadata,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now: i64,
) -> Result<EndDecision, ResponseError> {
    check_producer(cur, producer_id, epoch)?;
    let prepare = |state| {
        let mut next = cur.clone();
        next.state = state;
        next.last_update_ms = now;
        Ok(EndDecision::Prepare(next))
    };
    match (cur.state, commit) {
        (TxnState::Ongoing, true) => prepare(TxnState::PrepareCommit),
        (TxnState::Ongoing, false) => prepare(TxnState::PrepareAbort),
        // An empty transaction (nothing added since the last one) ends trivially.
        (TxnState::Empty, _) => {
            let mut next = cur.clone();
            next.state = if commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            };
            next.last_update_ms = now;
            Ok(EndDecision::Prepare(next))
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
            Ok(EndDecision::AlreadyDone)
        }
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// After every marker was written: the Complete state, with no partitions.
pub fn complete(cur: &TxnMetadata, now: i64) -> TxnMetadata {
    let mut next = cur.clone();
    next.state = match cur.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        _ => TxnState::CompleteAbort,
    };
    next.partitions.clear();
    next.txn_start_ms = -1;
    next.last_update_ms = now;
    next
}

/// An open transaction past its timeout: the PrepareAbort to persist, with the
/// epoch bumped so the producer that let it time out is fenced (as Kafka does).
pub fn expire_open(cur: &TxnMetadata, now: i64) -> Option<TxnMetadata> {
    let overdue =
        cur.txn_start_ms >= 0 && now.saturating_sub(cur.txn_start_ms) > i64::from(cur.timeout_ms);
    if overdue {
        abort_open(cur, now)
    } else {
        None
    }
}

/// An open transaction aborted from outside its producer (a timeout, an operator):
/// PrepareAbort with the epoch bumped, so the producer is fenced. `None` when no
/// transaction is open.
pub fn abort_open(cur: &TxnMetadata, now: i64) -> Option<TxnMetadata> {
    (cur.state == TxnState::Ongoing).then(|| {
        let mut next = cur.clone();
        next.producer_epoch = cur.producer_epoch.saturating_add(1).min(MAX_EPOCH);
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now;
        next
    })
}

/// Whether an idle `transactional.id` has been unused long enough to forget it.
pub fn expired_id(cur: &TxnMetadata, now: i64, expiration_ms: i64) -> bool {
    cur.state.is_idle() && now.saturating_sub(cur.last_update_ms) >= expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> TxnMetadata {
        match init_producer_id(None, 60_000, None, 0, || Some(7)).unwrap() {
            InitDecision::Ready(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn p(t: &str, i: i32) -> (String, i32) {
        (t.to_string(), i)
    }

    #[test]
    fn a_commit_goes_through_ongoing_and_prepare_to_complete() {
        let m = fresh();
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (7, 0, TxnState::Empty)
        );
        let m = add_partitions(&m, 7, 0, &[p("a", 0)], 10).unwrap().unwrap();
        assert_eq!((m.state, m.txn_start_ms), (TxnState::Ongoing, 10));
        // Adding the same partition again changes nothing; a new one is added.
        assert_eq!(add_partitions(&m, 7, 0, &[p("a", 0)], 11).unwrap(), None);
        let m = add_partitions(&m, 7, 0, &[p("b", 1)], 12).unwrap().unwrap();
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(m.txn_start_ms, 10);
        let EndDecision::Prepare(m) = end_txn(&m, 7, 0, true, 20).unwrap() else {
            panic!()
        };
        assert_eq!(m.state, TxnState::PrepareCommit);
        // While markers are written, the producer must wait.
        assert_eq!(
            add_partitions(&m, 7, 0, &[p("a", 0)], 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            end_txn(&m, 7, 0, true, 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            end_txn(&m, 7, 0, false, 21),
            Err(ResponseError::InvalidTxnState)
        );
        let m = complete(&m, 30);
        assert_eq!(m.state, TxnState::CompleteCommit);
        assert!(m.partitions.is_empty());
        assert_eq!(end_txn(&m, 7, 0, true, 31), Ok(EndDecision::AlreadyDone));
        assert_eq!(
            end_txn(&m, 7, 0, false, 31),
            Err(ResponseError::InvalidTxnState)
        );
        // The next transaction starts afresh.
        let m = add_partitions(&m, 7, 0, &[p("c", 0)], 40).unwrap().unwrap();
        assert_eq!(m.partitions.len(), 1);
        assert_eq!(m.txn_start_ms, 40);
    }

    #[test]
    fn a_new_instance_fences_the_old_one_and_aborts_its_open_transaction() {
        let m = fresh();
        let m = add_partitions(&m, 7, 0, &[p("a", 0)], 10).unwrap().unwrap();
        let InitDecision::AbortFirst(aborting) =
            init_producer_id(Some(&m), 60_000, None, 20, || None).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (aborting.state, aborting.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        // The zombie (epoch 0) is fenced from everything.
        assert_eq!(
            end_txn(&aborting, 7, 0, true, 21),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            init_producer_id(Some(&aborting), 60_000, None, 21, || None),
            Err(ResponseError::ConcurrentTransactions)
        );
        let done = complete(&aborting, 30);
        let InitDecision::Ready(next) =
            init_producer_id(Some(&done), 60_000, None, 31, || None).unwrap()
        else {
            panic!()
        };
        assert_eq!((next.producer_id, next.producer_epoch), (7, 2));
        assert_eq!(
            add_partitions(&next, 7, 1, &[p("a", 0)], 32),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            add_partitions(&next, 8, 2, &[p("a", 0)], 32),
            Err(ResponseError::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_producer_id_and_kip_360_checks_the_caller() {
        let mut m = fresh();
        m.producer_epoch = MAX_EPOCH;
        let InitDecision::Ready(n) = init_producer_id(Some(&m), 1, None, 1, || Some(9)).unwrap()
        else {
            panic!()
        };
        assert_eq!((n.producer_id, n.producer_epoch), (9, 0));
        let m = fresh();
        assert_eq!(
            init_producer_id(Some(&m), 1, Some((7, 3)), 1, || None),
            Err(ResponseError::ProducerFenced)
        );
        let InitDecision::Ready(n) =
            init_producer_id(Some(&m), 1, Some((7, 0)), 1, || None).unwrap()
        else {
            panic!()
        };
        assert_eq!(n.producer_epoch, 1);
        // The same request retried after its bump is answered with the same epoch.
        assert_eq!(
            init_producer_id(Some(&n), 1, Some((7, 0)), 2, || None),
            Ok(InitDecision::Ready(n.clone()))
        );
    }

    #[test]
    fn open_transactions_time_out_and_idle_ids_expire() {
        let m = fresh();
        let m = add_partitions(&m, 7, 0, &[p("a", 0)], 1_000)
            .unwrap()
            .unwrap();
        assert_eq!(expire_open(&m, 61_000), None);
        let aborting = expire_open(&m, 61_001).unwrap();
        assert_eq!(
            (aborting.state, aborting.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert!(!expired_id(&m, i64::MAX, 10));
        let done = complete(&aborting, 70_000);
        assert_eq!(done.state, TxnState::CompleteAbort);
        assert!(!expired_id(&done, 79_999, 10_000));
        assert!(expired_id(&done, 80_000, 10_000));
        // An empty transaction ends without markers.
        let EndDecision::Prepare(e) = end_txn(&fresh(), 7, 0, true, 5).unwrap() else {
            panic!()
        };
        assert_eq!(e.state, TxnState::CompleteCommit);
    }
}
