//! The partition log: an ordered list of segments in one directory per partition.
//! This is the bottom of the data path: Produce appends validated batches here and
//! Fetch reads byte ranges straight back out.
//!
//! Concurrency model (see docs/architecture.md): a `PartitionLog` is owned by its
//! partition behind a synchronous mutex. Appends and index lookups happen under the
//! lock and never await; the bulk read of a fetch happens after the lock is released,
//! through a [`segment::SegmentReader`] snapshot.

pub mod batch;
pub mod cleaner;
mod delete_records;
pub mod epochs;
mod follow_start;
pub mod index;
mod read;
pub mod records;
mod recovery;
pub mod retention;
pub mod segment;
mod sync;
pub mod txn_index;

pub use delete_records::RecordsDeleted;
pub(crate) use read::first_record_at_or_after;
pub use read::{FileSlice, ReadPlan};
pub use sync::SyncJob;
pub use txn_index::AbortedTxn;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::producer::{self, Check, ProducerStateTable, SequenceError};
use batch::{BatchError, BatchHeader, Marker};
use epochs::LeaderEpochCache;
pub use segment::ReadMode;
use segment::Segment;
use txn_index::TxnIndex;

/// Per-partition log settings, resolved from topic config over broker defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one is this old (ms).
    pub segment_ms: i64,
    /// Delete old segments while the partition is larger than this (-1: no limit).
    pub retention_bytes: i64,
    /// Delete segments whose newest record is older than this (ms, -1: no limit).
    pub retention_ms: i64,
    /// fsync after this many messages (u64::MAX: leave it to the OS).
    pub flush_messages: u64,
    /// fsync when unflushed data is this old (ms, i64::MAX: never).
    pub flush_ms: i64,
    /// Bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// Largest record batch accepted.
    pub max_message_bytes: usize,
    /// Stamp batches with the broker's clock instead of the producer's.
    pub log_append_time: bool,
    /// Set when the topic is tiered: how much stays on local disk.
    pub remote: Option<retention::LocalRetention>,
    /// Set when `cleanup.policy` includes `compact`: the log cleaner's settings.
    pub compaction: Option<cleaner::CompactionConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            remote: None,
            compaction: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt record batch: {0}")]
    Corrupt(#[from] BatchError),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("cannot decode stored batch: {0}")]
    Decode(String),
    #[error("producer sequence rejected: {0:?}")]
    Sequence(SequenceError),
    #[error("malformed control batch at offset {0}")]
    BadControlBatch(i64),
    #[error("this broker is not the leader of the partition")]
    NotLeader,
}

impl LogError {
    /// A `Cached` read found bytes that are not in the page cache.
    pub fn would_block(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Produce data after validation, ready to be appended. Validation (CRC over every
/// byte) is the expensive part, so it happens before the partition lock is taken.
#[derive(Debug)]
pub struct ValidatedRecords {
    /// The request's bytes as received (shared, never copied): the fields an
    /// append assigns are patched into a copy of each batch's header.
    buf: Bytes,
    batches: Vec<(BatchHeader, Range<usize>)>,
}

impl ValidatedRecords {
    pub fn new(records: &[u8], max_message_bytes: usize) -> Result<Self, LogError> {
        Self::shared(Bytes::copy_from_slice(records), max_message_bytes)
    }

    /// [`ValidatedRecords::new`] over a request's own buffer, without a copy.
    pub fn shared(records: Bytes, max_message_bytes: usize) -> Result<Self, LogError> {
        let batches = batch::split_batches(&records)?;
        for (h, _) in &batches {
            if h.total_len() > max_message_bytes {
                return Err(LogError::TooLarge {
                    size: h.total_len(),
                    max: max_message_bytes,
                });
            }
        }
        Ok(ValidatedRecords {
            buf: records,
            batches,
        })
    }

    /// Batches fetched from a leader: validated as stored batches
    /// ([`batch::validate_stored`]), since a compacted leader serves cleaned ones.
    pub fn from_replica(records: Bytes) -> Result<Self, LogError> {
        let mut batches = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let h = batch::validate_stored(&records[pos..])?;
            let end = pos + h.total_len();
            batches.push((h, pos..end));
            pos = end;
        }
        Ok(ValidatedRecords {
            buf: records,
            batches,
        })
    }

    pub fn batches(&self) -> impl Iterator<Item = &BatchHeader> {
        self.batches.iter().map(|(h, _)| h)
    }

    pub fn record_count(&self) -> u64 {
        self.batches
            .iter()
            .map(|(h, _)| h.records_count as u64)
            .sum()
    }

    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }
}

/// The most offsets a segment spans past its base, so that offsets relative to
/// the base fit the index's 32 bits (Kafka's bound too: `Integer.MAX_VALUE`).
const MAX_SEGMENT_OFFSETS: i64 = i32::MAX as i64;

/// The largest `segment.bytes`: byte positions in a segment fit the index's 32
/// bits with room to spare (Kafka's bound too: `Integer.MAX_VALUE`).
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Broker timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    /// The batches were retries of batches already in the log; nothing was written.
    pub duplicate: bool,
    /// The leader epoch the append was made in: an acks=all wait fails if the
    /// leadership changed after it (the records may be truncated away).
    pub leader_epoch: i32,
}

/// Files of a closed segment, for the tier uploader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedSegment {
    pub base_offset: i64,
    pub end_offset: i64,
    pub max_timestamp: i64,
    pub size_bytes: u64,
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
    /// Producer state as of the segment's end (written when it was rolled), if kept.
    pub producer_snapshot: PathBuf,
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; the last one is active. Never empty.
    segments: Vec<Segment>,
    log_start_offset: i64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    producers: ProducerStateTable,
    epochs: LeaderEpochCache,
    /// Aborted transactions, and decided ones not yet replicated.
    txns: TxnIndex,
    /// End of the committed remote copy (-1: unknown); bounds local deletion.
    remote_end_offset: i64,
    /// Batches replayed into the producer state when the log was opened (after the
    /// snapshot it started from); recovery time is proportional to it.
    producer_batches_replayed: u64,
    /// Base offsets of rolled segments not fsynced yet (the next [`SyncJob`] does).
    unsynced_segments: Vec<i64>,
    /// `flush.messages` was reached: the caller should run a sync job.
    sync_due: bool,
    /// Everything below this offset is known to be on disk.
    durable_end: i64,
    /// Bumped by truncation: a sync job taken before it proves nothing after it.
    sync_generation: u64,
    /// Counts in-place rewrites of segment bytes (truncations, a reset): a zero-copy
    /// send that began before one must not complete its frame ([`FileSlice`]).
    rewrites: Arc<AtomicU64>,
    /// An fsync failed: the page cache may have dropped what it held, so nothing is
    /// assumed durable any more (until a restart recovers the log).
    sync_failed: bool,
    /// DeleteRecords' low watermark ([`PartitionLog::deleted_below`]).
    deleted_below: i64,
}

impl PartitionLog {
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Batches replayed into the producer state when the log was opened.
    pub fn producer_batches_replayed(&self) -> u64 {
        self.producer_batches_replayed
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Log end offset: the offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// Closed (no longer written) segments: candidates for upload to the tier.
    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        let n = self.segments.len();
        self.segments[..n.saturating_sub(1)]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                let stem = self.dir.join(segment::file_stem(s.base_offset()));
                ClosedSegment {
                    base_offset: s.base_offset(),
                    end_offset: s.next_offset(),
                    max_timestamp: s.max_timestamp(),
                    size_bytes: s.size(),
                    log: stem.with_extension("log"),
                    index: stem.with_extension("index"),
                    time_index: stem.with_extension("timeindex"),
                    producer_snapshot: producer::snapshot_path(&self.dir, s.next_offset()),
                }
            })
            .collect()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        // Invariant: `segments` is never empty.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let n = self.segments.len();
        &mut self.segments[n - 1]
    }

    /// Whether appending `bytes` now stays a page-cache write: no segment roll (which
    /// creates files), no fsync asked for by a flush policy or a pending sync. The
    /// produce path appends such writes on the request's own thread and hands the
    /// others to the blocking pool; a roll that a concurrent append makes necessary
    /// in between is done inline, rarely.
    pub fn append_stays_in_memory(&self, bytes: u64, now_ms: i64) -> bool {
        let active = self.active();
        let roll = !active.is_empty()
            && (active.size() + bytes > self.config.segment_bytes
                || now_ms - active.created_at_ms() >= self.config.segment_ms
                // Far from the offset bound in practice; a margin instead of the span.
                || self.log_end_offset() - active.base_offset() > MAX_SEGMENT_OFFSETS / 2);
        !roll && !self.sync_wanted() && !self.has_flush_policy()
    }

    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let next = self.log_end_offset();
        let dir = self.dir.clone();
        let active = self.active_mut();
        active.seal().map_err(io_err(&dir))?;
        // fsynced by a later sync job, after the lock is released (see `take_sync`).
        let base = self.active().base_offset();
        let start = self.log_start_offset;
        self.unsynced_segments.retain(|b| *b >= start);
        self.unsynced_segments.push(base);
        let seg = Segment::create(&dir, next, self.config.index_interval_bytes, now_ms)
            .map_err(io_err(&dir))?;
        debug!(dir = %dir.display(), base = next, "rolled segment");
        self.segments.push(seg);
        // The producer state as of the new segment's base: recovery starts from the
        // newest such snapshot instead of replaying the whole log, and the tier
        // uploads it with the closed segment. Callers roll before recording the
        // batches of the new segment, so the table is exactly the state below `next`.
        // Losing a snapshot only costs replay time, so a failure does not fail the
        // append.
        if let Err(e) = producer::write_snapshot(&dir, next, &self.producers) {
            warn!(dir = %dir.display(), offset = next, error = %e, "cannot write producer snapshot");
        }
        Ok(())
    }

    /// Appends validated batches, assigning offsets from the log end offset and
    /// stamping the leader epoch. Rolls the active segment first when needed.
    pub fn append(
        &mut self,
        mut records: ValidatedRecords,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        // Idempotence: drop retried batches, refuse gaps and zombie epochs.
        let mut duplicate_of = None;
        let mut keep = Vec::with_capacity(records.batches.len());
        for (h, range) in records.batches.drain(..) {
            if h.is_control() {
                let marker = batch::control_record(&records.buf[range.clone()])
                    .ok_or(LogError::BadControlBatch(h.base_offset))?;
                self.producers
                    .check_marker(&h, &marker)
                    .map_err(LogError::Sequence)?;
                keep.push((h, range));
                continue;
            }
            let verdict = self.producers.check(&h).map_err(|e| {
                // Rare, and a client may answer it by bumping its epoch and resending:
                // worth a line whenever it happens.
                info!(dir = %self.dir.display(), producer_id = h.producer_id,
                    epoch = h.producer_epoch, base_sequence = h.base_sequence,
                    records = h.records_count, error = ?e, "refused an idempotent batch");
                LogError::Sequence(e)
            })?;
            match verdict {
                Check::Append => keep.push((h, range)),
                Check::Duplicate(meta) => {
                    duplicate_of.get_or_insert(meta);
                }
            }
        }
        records.batches = keep;
        if records.batches.is_empty() {
            let meta = duplicate_of.ok_or_else(|| LogError::Decode("empty record set".into()))?;
            return Ok(AppendInfo {
                base_offset: meta.base_offset,
                last_offset: meta.last_offset,
                log_append_time: -1,
                duplicate: true,
                leader_epoch,
            });
        }
        let total = records
            .batches
            .iter()
            .map(|(h, _)| h.total_len() as u64)
            .sum::<u64>();
        let span: i64 = records
            .batches
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta) + 1)
            .sum();
        let active = self.active();
        let too_big = active.size() + total > self.config.segment_bytes;
        let too_old = now_ms - active.created_at_ms() >= self.config.segment_ms;
        let too_many =
            self.log_end_offset() + span - 1 - active.base_offset() > MAX_SEGMENT_OFFSETS;
        if !active.is_empty() && (too_big || too_old || too_many) {
            self.roll(now_ms)?;
        }
        let base_offset = self.log_end_offset();
        self.epochs
            .assign(leader_epoch, base_offset)
            .map_err(io_err(&self.dir))?;
        let mut next = base_offset;
        let log_append_time = if self.config.log_append_time {
            now_ms
        } else {
            -1
        };
        let dir = self.dir.clone();
        for (h, range) in records.batches.iter_mut() {
            // The assigned fields go into a copy of the header; the rest of the batch
            // is written from the request's buffer as it is (one `pwritev`).
            let (head_in, body) = records.buf[range.clone()].split_at(batch::HEADER_LEN);
            let mut head = [0u8; batch::HEADER_LEN];
            head.copy_from_slice(head_in);
            batch::set_base_offset(&mut head, next);
            batch::set_leader_epoch(&mut head, leader_epoch);
            if self.config.log_append_time {
                batch::set_log_append_time_split(&mut head, body, now_ms);
                h.max_timestamp = now_ms;
            }
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            let seg = self
                .segments
                .last_mut()
                .ok_or_else(|| LogError::Decode("no active segment".into()))?;
            seg.append_parts(&head, body, h).map_err(io_err(&dir))?;
            if h.is_control() {
                // Markers are a few bytes: their parser wants the batch in one piece.
                let whole = [&head[..], body].concat();
                record_batch(&mut self.producers, &mut self.txns, h, &whole)
            } else {
                record_batch(&mut self.producers, &mut self.txns, h, &[])
            }
            .map_err(io_err(&dir))?;
            next = h.last_offset() + 1;
        }
        self.unflushed_messages += records.record_count();
        if self.unflushed_messages >= self.config.flush_messages {
            self.sync_due = true;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time,
            duplicate: false,
            leader_epoch,
        })
    }

    /// Appends batches fetched from the leader as they are: offsets and leader epochs
    /// were assigned there. Batches the log already has are skipped; a gap is an error.
    pub fn append_replicated(
        &mut self,
        records: ValidatedRecords,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        let mut written = 0;
        let dir = self.dir.clone();
        for (h, range) in &records.batches {
            let end = self.log_end_offset();
            if h.last_offset() < end {
                continue;
            }
            // A compacted leader's log has gaps where its cleaner removed records.
            let gap_ok = self.config.compaction.is_some() && h.base_offset > end;
            if gap_ok {
                cleaner::note_gaps(&dir).map_err(io_err(&dir))?;
            }
            if h.base_offset != end && !gap_ok {
                return Err(LogError::Decode(format!(
                    "replicated batch at offset {} does not follow the log end {end}",
                    h.base_offset
                )));
            }
            let active = self.active();
            let too_big = active.size() + h.total_len() as u64 > self.config.segment_bytes;
            let too_old = now_ms - active.created_at_ms() >= self.config.segment_ms;
            let too_many = h.last_offset() - active.base_offset() > MAX_SEGMENT_OFFSETS;
            if !active.is_empty() && (too_big || too_old || too_many) {
                self.roll(now_ms)?;
            }
            self.epochs
                .assign(h.partition_leader_epoch, h.base_offset)
                .map_err(io_err(&dir))?;
            let seg = self
                .segments
                .last_mut()
                .ok_or_else(|| LogError::Decode("no active segment".into()))?;
            let bytes = &records.buf[range.clone()];
            seg.append(bytes, h).map_err(io_err(&dir))?;
            record_batch(&mut self.producers, &mut self.txns, h, bytes).map_err(io_err(&dir))?;
            self.unflushed_messages += h.records_count as u64;
            written += 1;
        }
        if self.unflushed_messages >= self.config.flush_messages {
            self.sync_due = true;
        }
        Ok(written)
    }

    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Records that a new leader epoch starts at the current log end offset.
    pub fn start_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        let end = self.log_end_offset();
        self.epochs.assign(epoch, end).map_err(io_err(&self.dir))
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        let i = self.segments.partition_point(|s| s.base_offset() <= offset);
        i.saturating_sub(1)
    }

    /// Deletes every segment and restarts the log empty at `offset` (a follower whose
    /// log ends before the leader's log start).
    pub fn reset_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        // Before any byte changes: `Segment::create` may truncate a file in place.
        self.rewrites.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.clone();
        let fresh = Segment::create(&dir, offset, self.config.index_interval_bytes, now_ms)
            .map_err(io_err(&dir))?;
        for seg in std::mem::replace(&mut self.segments, vec![fresh]) {
            if seg.base_offset() != offset {
                seg.delete().map_err(io_err(&dir))?;
            }
        }
        self.log_start_offset = offset;
        self.sync_generation += 1;
        self.durable_end = offset;
        self.unsynced_segments.clear();
        self.producers = ProducerStateTable::default();
        self.txns.truncate_from(i64::MIN).map_err(io_err(&dir))?;
        self.epochs.truncate_from(i64::MIN).map_err(io_err(&dir))?;
        // The state restarts empty, and so must recovery: no snapshot of the old log
        // may be loaded on top of the new one.
        producer::remove_snapshots_above(&dir, offset - 1).map_err(io_err(&dir))?;
        producer::remove_snapshots_below(&dir, offset).map_err(io_err(&dir))
    }

    /// Removes every record at or after `offset` (used when a replica's tail diverges).
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let offset = offset.max(self.log_start_offset);
        // Before any byte changes (see `FileSlice::unchanged`).
        self.rewrites.fetch_add(1, Ordering::SeqCst);
        while self.segments.len() > 1 && self.active().base_offset() >= offset {
            if let Some(seg) = self.segments.pop() {
                seg.delete().map_err(io_err(&self.dir))?;
            }
        }
        let dir = self.dir.clone();
        self.active_mut()
            .truncate_to(offset)
            .map_err(io_err(&dir))?;
        self.sync_generation += 1;
        self.durable_end = self.durable_end.min(self.log_end_offset());
        self.epochs.truncate_from(offset).map_err(io_err(&dir))?;
        self.txns.truncate_from(offset).map_err(io_err(&dir))?;
        // Rebuilt rather than trimmed: a truncated marker reopens its transaction,
        // and only a replay knows the epoch the producer had before it.
        self.rebuild_producer_state()
    }

    /// Flushes everything before a clean shutdown.
    pub fn close(&mut self, now_ms: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        self.active_mut().seal().map_err(io_err(&dir))?;
        self.sync_all_now(now_ms)?;
        self.epochs.sync_now().map_err(io_err(&dir))?;
        if let Some(path) = self.txns.take_dirty() {
            epochs::sync_file_and_dir(&path).map_err(io_err(&dir))?;
        }
        self.active().sync().map_err(io_err(&dir))
    }

    /// The last stable offset given the high watermark: below it every transaction
    /// is decided by a replicated marker, so `read_committed` consumers read up to it.
    pub fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        let open = self.producers.first_open_txn_offset();
        let unreplicated = self.txns.first_unreplicated(high_watermark);
        [Some(high_watermark), open, unreplicated]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(high_watermark)
    }

    /// Aborted transactions with records in `[from, to)`.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.txns.overlapping(from, to)
    }

    /// Open transactions: `(producer id, epoch, first offset)`.
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.producers.open_transactions()
    }

    pub fn producers(&self) -> &ProducerStateTable {
        &self.producers
    }
}

/// Applies one appended (or replayed) batch to the producer state and, for a
/// transaction marker, to the transaction index. `bytes` is the whole batch; only a
/// control batch's are read.
fn record_batch(
    producers: &mut ProducerStateTable,
    txns: &mut TxnIndex,
    h: &BatchHeader,
    bytes: &[u8],
) -> io::Result<()> {
    if !h.is_control() {
        producers.record(h);
        return Ok(());
    }
    let Some(marker) = batch::control_record(bytes) else {
        warn!(
            offset = h.base_offset,
            "ignoring a control batch that is not a marker"
        );
        return Ok(());
    };
    match producers.record_marker(h, &marker) {
        Some(first) => txns.decided(
            h.producer_id,
            first,
            h.base_offset,
            marker.marker == Marker::Abort,
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
