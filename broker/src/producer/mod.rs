//! Idempotent producer state: per partition, the epoch and the last five batches of
//! each producer id, used to drop retried duplicates and reject gaps. The decisions
//! are pure ([`ProducerStateTable::check`]); the log calls them under its lock,
//! snapshots the table at every segment roll (`<offset>.snapshot`, the state of
//! everything below `offset`, the base of the new segment) and rebuilds it on
//! recovery from the newest valid snapshot plus the batch headers written after it.
//! Producers idle for longer than `producer_id_expiration_ms` are forgotten.
//!
//! Transactions: the first offset of each producer's open transaction on this
//! partition (which bounds the last stable offset) and the epoch of the coordinator
//! that wrote its last marker. A marker (control batch) closes the open transaction;
//! its producer epoch fences older epochs, its coordinator epoch older coordinators.

pub mod id_allocator;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tracing::warn;

use crate::log::batch::{BatchHeader, ControlRecord};

/// Kafka keeps the last five batches per producer; clients never have more in flight.
pub const BATCHES_KEPT: usize = 5;

/// A batch remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Largest batch timestamp seen from this producer: expiry counts from it, as
    /// Kafka's `producer.id.expiration.ms` does.
    #[serde(default)]
    pub last_timestamp: i64,
    /// First offset of this producer's open transaction on this partition.
    #[serde(default)]
    pub txn_first_offset: Option<i64>,
    /// Epoch of the transaction coordinator that wrote this producer's last marker.
    #[serde(default = "no_coordinator_epoch")]
    pub coordinator_epoch: i32,
}

fn no_coordinator_epoch() -> i32 {
    -1
}

/// Why a producer's batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceError {
    /// The batch's epoch is older than the producer's current one (a zombie).
    InvalidEpoch { current: i16, got: i16 },
    /// The batch does not follow the last one (a gap or reordering).
    OutOfOrder { expected: i32, got: i32 },
    /// A marker from a transaction coordinator older than one that already wrote a
    /// marker for this producer.
    CoordinatorFenced { current: i32, got: i32 },
}

/// The verdict for one incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// A retry of a batch already in the log: acknowledge with its original offsets.
    Duplicate(BatchMeta),
}

/// Sequence numbers wrap from i32::MAX back to 0.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn last_seq_of(h: &BatchHeader) -> i32 {
    let last = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// `(first offset, producer id)` of every open transaction: derived from the
    /// entries (rebuilt by [`ProducerStateTable::reindex`] after loading).
    #[serde(skip)]
    open_txns: BTreeSet<(i64, i64)>,
}

impl ProducerStateTable {
    /// Decides what to do with a batch before it is appended.
    pub fn check(&self, h: &BatchHeader) -> Result<Check, SequenceError> {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Ok(Check::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its state expired): accept from any sequence.
            return Ok(Check::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch restarts the sequence at 0.
            return if h.base_sequence == 0 {
                Ok(Check::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_seq_of(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Check::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(prev) if next_seq(prev.last_seq) != h.base_sequence => {
                Err(SequenceError::OutOfOrder {
                    expected: next_seq(prev.last_seq),
                    got: h.base_sequence,
                })
            }
            _ => Ok(Check::Append),
        }
    }

    /// Decides whether a transaction marker may be written: not from an epoch older
    /// than the producer's, nor from a coordinator older than the last one.
    pub fn check_marker(&self, h: &BatchHeader, c: &ControlRecord) -> Result<(), SequenceError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(());
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if c.coordinator_epoch < entry.coordinator_epoch {
            return Err(SequenceError::CoordinatorFenced {
                current: entry.coordinator_epoch,
                got: c.coordinator_epoch,
            });
        }
        Ok(())
    }

    fn entry_for(&mut self, h: &BatchHeader) -> &mut ProducerEntry {
        self.producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: h.max_timestamp,
                txn_first_offset: None,
                coordinator_epoch: -1,
            })
    }

    /// Records a marker that was appended; returns the first offset of the
    /// transaction it closed, if the producer had one open here.
    pub fn record_marker(&mut self, h: &BatchHeader, c: &ControlRecord) -> Option<i64> {
        if h.producer_id < 0 {
            return None;
        }
        let entry = self.entry_for(h);
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        if h.producer_epoch > entry.epoch {
            // A coordinator that fenced the producer wrote the marker with the
            // bumped epoch: the old epoch's batches are refused from now on.
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(c.coordinator_epoch);
        let first = entry.txn_first_offset.take()?;
        self.open_txns.remove(&(first, h.producer_id));
        Some(first)
    }

    /// Whether `producer_id` has a transaction open on this partition.
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// First offset of the oldest open transaction.
    pub fn first_open_txn_offset(&self) -> Option<i64> {
        self.open_txns.first().map(|(o, _)| *o)
    }

    /// Open transactions: `(producer id, epoch, first offset)`.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.open_txns
            .iter()
            .filter_map(|(o, pid)| Some((*pid, self.producers.get(pid)?.epoch, *o)))
            .collect()
    }

    /// Every producer: `(id, entry)`, for DescribeProducers.
    pub fn entries(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Rebuilds the open-transaction index from the entries (after loading).
    pub fn reindex(&mut self) {
        self.open_txns = self
            .producers
            .iter()
            .filter_map(|(pid, e)| Some((e.txn_first_offset?, *pid)))
            .collect();
    }

    /// Records a batch that was appended (its offsets are final).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        if h.is_transactional() {
            let entry = self.entry_for(h);
            if entry.txn_first_offset.is_none() {
                entry.txn_first_offset = Some(h.base_offset);
                self.open_txns.insert((h.base_offset, h.producer_id));
            }
        }
        let entry = self.entry_for(h);
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq_of(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than
    /// `now_ms`, so the table (and every snapshot) stays proportional to the active
    /// producers. A forgotten producer that comes back is accepted from any sequence,
    /// like a new one. Returns how many were removed.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        // A producer with an open transaction stays: its marker is still to come.
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }
}

/// Snapshot file name for the state as of `offset` (everything below it applied).
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// First bytes of a snapshot file, then the CRC32C of the JSON body that follows: a
/// torn or damaged snapshot is detected and skipped instead of trusted.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SPS1";

/// Encodes the state as of `offset` in the snapshot file format.
pub fn encode_snapshot(offset: i64, table: &ProducerStateTable) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(&SnapshotFile {
        offset,
        producers: table.clone(),
    })
    .map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a snapshot file; `None` when it is damaged or describes another offset.
pub fn decode_snapshot(raw: &[u8], offset: i64) -> Option<ProducerStateTable> {
    let body = raw.strip_prefix(SNAPSHOT_MAGIC)?;
    let (crc, body) = body.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*crc) != crc32c::crc32c(body) {
        return None;
    }
    let mut s: SnapshotFile = serde_json::from_slice(body).ok()?;
    s.producers.reindex();
    (s.offset == offset).then_some(s.producers)
}

/// Writes the snapshot of the state as of `offset` atomically (write, rename). It is
/// not fsynced: a snapshot lost or torn by a power failure fails its CRC or is
/// missing, and recovery falls back to an older one and replays more of the log.
pub fn write_snapshot(dir: &Path, offset: i64, table: &ProducerStateTable) -> io::Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    fs::write(&tmp, encode_snapshot(offset, table)?)?;
    fs::rename(&tmp, &path)
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    offset: i64,
    producers: ProducerStateTable,
}

fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(o) = stem.parse::<i64>() {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// Loads the newest valid snapshot at or below `max_offset`: `(offset, table)`.
/// Damaged snapshots are skipped (an older one, or none, means more replay).
pub fn load_snapshot(dir: &Path, max_offset: i64) -> io::Result<Option<(i64, ProducerStateTable)>> {
    let mut all = list_snapshots(dir)?;
    all.sort_unstable_by(|a, b| b.cmp(a));
    for o in all.into_iter().filter(|o| *o <= max_offset) {
        match fs::read(snapshot_path(dir, o)) {
            Ok(raw) => match decode_snapshot(&raw, o) {
                Some(table) => return Ok(Some((o, table))),
                None => {
                    warn!(dir = %dir.display(), offset = o, "ignoring a damaged producer snapshot")
                }
            },
            Err(e) => {
                warn!(dir = %dir.display(), offset = o, error = %e, "cannot read a producer snapshot")
            }
        }
    }
    Ok(None)
}

/// Removes snapshots above `offset` (they describe a truncated future).
pub fn remove_snapshots_above(dir: &Path, offset: i64) -> io::Result<()> {
    remove_snapshots_where(dir, |o| o > offset)
}

/// Removes snapshots below `offset` (the log start): the segments they precede are
/// deleted, and recovery never starts before the log start.
pub fn remove_snapshots_below(dir: &Path, offset: i64) -> io::Result<()> {
    remove_snapshots_where(dir, |o| o < offset)
}

fn remove_snapshots_where(dir: &Path, doomed: impl Fn(i64) -> bool) -> io::Result<()> {
    for o in list_snapshots(dir)? {
        if doomed(o) {
            match fs::remove_file(snapshot_path(dir, o)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut t = ProducerStateTable::default();
        for i in 0..10 {
            let b = h(7, 0, i * 3, 3, i64::from(i) * 3);
            assert_eq!(t.check(&b), Ok(Check::Append));
            t.record(&b);
        }
        // A retry of one of the last five batches is acknowledged, not appended.
        match t.check(&h(7, 0, 24, 3, -1)) {
            Ok(Check::Duplicate(m)) => assert_eq!(m.base_offset, 24),
            other => panic!("{other:?}"),
        }
        // An old batch outside the window is out of order.
        assert!(matches!(
            t.check(&h(7, 0, 0, 3, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        // A gap is out of order.
        assert_eq!(
            t.check(&h(7, 0, 33, 3, -1)),
            Err(SequenceError::OutOfOrder {
                expected: 30,
                got: 33
            })
        );
    }

    #[test]
    fn epochs_fence_zombies_and_reset_sequences() {
        let mut t = ProducerStateTable::default();
        t.record(&h(1, 3, 0, 1, 0));
        assert_eq!(
            t.check(&h(1, 2, 1, 1, 1)),
            Err(SequenceError::InvalidEpoch { current: 3, got: 2 })
        );
        assert_eq!(t.check(&h(1, 4, 0, 1, 1)), Ok(Check::Append));
        assert!(t.check(&h(1, 4, 5, 1, 1)).is_err());
        // Non-idempotent batches are never checked.
        assert_eq!(t.check(&h(-1, -1, -1, 1, 0)), Ok(Check::Append));
    }

    #[test]
    fn sequences_wrap_around() {
        let mut t = ProducerStateTable::default();
        t.record(&h(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(t.check(&h(1, 0, 0, 1, 2)), Ok(Check::Append));
    }

    #[test]
    fn snapshots_round_trip_and_damaged_ones_fall_back_to_older() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = ProducerStateTable::default();
        t.record(&h(1, 0, 0, 1, 0));
        for o in [10, 20, 30] {
            write_snapshot(dir.path(), o, &t).unwrap();
        }
        assert_eq!(load_snapshot(dir.path(), 25).unwrap().unwrap().0, 20);
        assert_eq!(
            load_snapshot(dir.path(), 100).unwrap().unwrap(),
            (30, t.clone())
        );
        assert!(load_snapshot(dir.path(), 5).unwrap().is_none());
        // A flipped byte in the newest one: the one before it is used.
        let p30 = snapshot_path(dir.path(), 30);
        let mut raw = fs::read(&p30).unwrap();
        let last = raw.len() - 2;
        raw[last] ^= 0x01;
        fs::write(&p30, raw).unwrap();
        assert_eq!(load_snapshot(dir.path(), 100).unwrap().unwrap().0, 20);
        // A snapshot renamed to another offset is not trusted either.
        fs::copy(snapshot_path(dir.path(), 10), snapshot_path(dir.path(), 25)).unwrap();
        assert_eq!(load_snapshot(dir.path(), 26).unwrap().unwrap().0, 20);
        fs::write(snapshot_path(dir.path(), 20), b"").unwrap();
        assert_eq!(load_snapshot(dir.path(), 100).unwrap().unwrap().0, 10);
        remove_snapshots_above(dir.path(), 20).unwrap();
        remove_snapshots_below(dir.path(), 20).unwrap();
        assert!(load_snapshot(dir.path(), 100).unwrap().is_none());
    }

    #[test]
    fn idle_producers_expire_from_their_last_batch_timestamp() {
        let mut t = ProducerStateTable::default();
        let mut old = h(1, 0, 0, 1, 0);
        old.max_timestamp = 1_000;
        let mut recent = h(2, 0, 0, 1, 1);
        recent.max_timestamp = 50_000;
        t.record(&old);
        t.record(&recent);
        assert_eq!(t.expire(60_000, 59_001), 0);
        assert_eq!(t.expire(60_000, 59_000), 1);
        assert_eq!(t.len(), 1);
        // The expired producer is accepted again from any sequence, like a new one.
        assert_eq!(t.check(&h(1, 0, 77, 1, 2)), Ok(Check::Append));
        assert!(t.check(&h(2, 0, 77, 1, 2)).is_err());
    }
}
