//! The partition log: an ordered list of segments in one directory per partition.
//! This is the bottom of the data path: Produce appends validated batches here and
//! Fetch reads byte ranges straight back out.
//!
//! Concurrency model (see docs/architecture.md): a `PartitionLog` is owned by its
//! partition behind a synchronous mutex. Appends and index lookups happen under the
//! lock and never await; the bulk read of a fetch happens after the lock is released,
//! through a [`segment::SegmentReader`] snapshot.

pub mod batch;
pub mod epochs;
pub mod index;
pub mod retention;
pub mod segment;

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::producer::{self, Check, ProducerStateTable, SequenceError};
use batch::{BatchError, BatchHeader};
use epochs::LeaderEpochCache;
pub use segment::ReadMode;
use segment::{Segment, SegmentReader};

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
    buf: BytesMut,
    batches: Vec<(BatchHeader, Range<usize>)>,
}

impl ValidatedRecords {
    pub fn new(records: &[u8], max_message_bytes: usize) -> Result<Self, LogError> {
        let batches = batch::split_batches(records)?;
        for (h, _) in &batches {
            if h.total_len() > max_message_bytes {
                return Err(LogError::TooLarge {
                    size: h.total_len(),
                    max: max_message_bytes,
                });
            }
        }
        Ok(ValidatedRecords {
            buf: BytesMut::from(records),
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

/// Where an append landed.
/// The most offsets a segment spans past its base, so that offsets relative to
/// the base fit the index's 32 bits (Kafka's bound too: `Integer.MAX_VALUE`).
const MAX_SEGMENT_OFFSETS: i64 = i32::MAX as i64;

/// The largest `segment.bytes`: byte positions in a segment fit the index's 32
/// bits with room to spare (Kafka's bound too: `Integer.MAX_VALUE`).
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

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

/// A planned fetch read, executed without the partition lock.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    reader: Option<SegmentReader>,
    pos: u64,
    max_bytes: usize,
    min_one: bool,
    /// Batches ending at or beyond this offset are left out (the high watermark).
    max_offset: i64,
}

impl ReadPlan {
    /// Stops the read before the batch containing `offset` (consumers only see data
    /// below the high watermark).
    pub fn limit(mut self, offset: i64) -> Self {
        self.max_offset = offset;
        self
    }

    pub fn read(&self) -> io::Result<Bytes> {
        self.read_with(ReadMode::Blocking)
    }

    /// [`ReadPlan::read`]; in `Cached` mode `WouldBlock` unless the page cache holds
    /// every byte.
    pub fn read_with(&self, mode: ReadMode) -> io::Result<Bytes> {
        let data = match &self.reader {
            Some(r) => r.read_batches_with(self.pos, self.max_bytes, self.min_one, mode)?,
            None => return Ok(Bytes::new()),
        };
        if self.max_offset == i64::MAX {
            return Ok(data);
        }
        let mut keep = 0;
        for (h, at) in batch::headers(&data) {
            if h.last_offset() >= self.max_offset {
                break;
            }
            keep = at + h.total_len();
        }
        Ok(data.slice(..keep))
    }
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
    /// End of the committed remote copy (-1: unknown); bounds local deletion.
    remote_end_offset: i64,
    /// Batches replayed into the producer state when the log was opened (after the
    /// snapshot it started from); recovery time is proportional to it.
    producer_batches_replayed: u64,
    /// A checkpoint whose older segments wait for the high watermark (see
    /// [`PartitionLog::checkpoint`]).
    pending_checkpoint: Option<PendingCheckpoint>,
    /// Base offsets of rolled segments not fsynced yet (the next [`SyncJob`] does).
    unsynced_segments: Vec<i64>,
    /// `flush.messages` was reached: the caller should run a sync job.
    sync_due: bool,
    /// Everything below this offset is known to be on disk.
    durable_end: i64,
    /// Bumped by truncation: a sync job taken before it proves nothing after it.
    sync_generation: u64,
    /// An fsync failed: the page cache may have dropped what it held, so nothing is
    /// assumed durable any more (until a restart recovers the log).
    sync_failed: bool,
}

/// fsyncs taken under the log lock and run after it is released, so request
/// handlers waiting for the lock never wait for the disk
/// ([`PartitionLog::take_sync`]).
#[derive(Debug)]
pub struct SyncJob {
    files: Vec<File>,
    epochs: Option<PathBuf>,
    /// What is durable once the job succeeded.
    upto: i64,
    generation: u64,
}

impl SyncJob {
    pub fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(path) = &self.epochs {
            epochs::sync_file_and_dir(path)?;
        }
        Ok(())
    }
}

/// "Delete the segments below `delete_below` once the high watermark reaches
/// `once_hw`": the history a checkpoint replaces goes only when every in-sync replica
/// has the checkpoint, so none of them — any of which may be elected — is ever left
/// with neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCheckpoint {
    /// Where the checkpoint starts (the base of the segment it was written to).
    pub delete_below: i64,
    /// One past the checkpoint's last offset.
    pub once_hw: i64,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. After an unclean shutdown the active
    /// segment is fully re-validated and a torn tail is truncated.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        clean_shutdown: bool,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = segment::parse_log_name(&name) {
                bases.push(base);
            } else if name.ends_with(".deleted") || name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let last = bases.len().saturating_sub(1);
        for (i, base) in bases.iter().enumerate() {
            let full = i == last && !clean_shutdown;
            let (seg, report) =
                Segment::open(dir, *base, config.index_interval_bytes, full, now_ms)
                    .map_err(io_err(dir))?;
            if report.truncated_bytes > 0 {
                info!(dir = %dir.display(), base, truncated = report.truncated_bytes, "recovered segment");
            }
            // A segment that lost its whole content to truncation (and is not the only
            // one) is dropped so offsets stay contiguous.
            if let Some(prev) = segments.last() {
                if seg.base_offset() < prev.next_offset() {
                    return Err(LogError::Io {
                        path: dir.to_path_buf(),
                        source: io::Error::new(io::ErrorKind::InvalidData, "overlapping segments"),
                    });
                }
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(
                Segment::create(dir, 0, config.index_interval_bytes, now_ms)
                    .map_err(io_err(dir))?,
            );
        }
        let log_start_offset = segments[0].base_offset();
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            producers: ProducerStateTable::default(),
            epochs: LeaderEpochCache::open(dir).map_err(io_err(dir))?,
            remote_end_offset: -1,
            producer_batches_replayed: 0,
            pending_checkpoint: None,
            unsynced_segments: Vec::new(),
            sync_due: false,
            durable_end: 0,
            sync_generation: 0,
            sync_failed: false,
        };
        log.rebuild_producer_state()?;
        let end = log.log_end_offset();
        // Epochs that start beyond a recovered (truncated) tail are gone with it.
        log.epochs.truncate_from(end + 1).map_err(io_err(dir))?;
        if clean_shutdown {
            log.durable_end = end;
        } else {
            log.recover_epochs_from_batches()?;
            // What survived may still sit only in the page cache (after a kill rather
            // than a power failure): the first sync job fsyncs every segment.
            log.durable_end = log.log_start_offset;
            let n = log.segments.len();
            log.unsynced_segments = log.segments[..n - 1]
                .iter()
                .map(Segment::base_offset)
                .collect();
            log.sync_due = true;
            log.unflushed_messages = log.unflushed_messages.max(1);
        }
        if log.epochs.latest_epoch() < 0 && end > log.log_start_offset {
            // Data written before epochs were checkpointed: single-node epoch 0.
            log.epochs
                .assign(0, log.log_start_offset)
                .map_err(io_err(dir))?;
        }
        Ok(log)
    }

    /// Loads the newest valid producer-state snapshot and replays the batch headers
    /// written after it, so idempotence survives restarts and crashes without reading
    /// the whole log. Without a usable snapshot the whole log is replayed.
    fn rebuild_producer_state(&mut self) -> Result<(), LogError> {
        let end = self.log_end_offset();
        // Snapshots past a recovered (truncated) end describe records that are gone;
        // those below the log start belong to deleted segments.
        producer::remove_snapshots_above(&self.dir, end).map_err(io_err(&self.dir))?;
        producer::remove_snapshots_below(&self.dir, self.log_start_offset)
            .map_err(io_err(&self.dir))?;
        let (from, table) = producer::load_snapshot(&self.dir, end)
            .map_err(io_err(&self.dir))?
            .unwrap_or((self.log_start_offset, ProducerStateTable::default()));
        self.producers = table;
        let from = from.max(self.log_start_offset);
        let mut replayed = 0;
        for seg in &self.segments {
            if seg.next_offset() <= from {
                continue;
            }
            let reader = seg.reader();
            let mut pos = seg
                .find_position(from)
                .map_err(io_err(&self.dir))?
                .unwrap_or(0);
            while let Some(h) = reader.header_at(pos).map_err(io_err(&self.dir))? {
                if h.base_offset >= from {
                    self.producers.record(&h);
                    replayed += 1;
                }
                pos += h.total_len() as u64;
            }
        }
        self.producer_batches_replayed = replayed;
        debug!(dir = %self.dir.display(), from, replayed, producers = self.producers.len(),
            "rebuilt producer state");
        Ok(())
    }

    /// After an unclean shutdown: adds the leader epochs that the batches of the last
    /// two segments carry but the checkpoint file lacks. The file is fsynced right
    /// after each change ([`SyncJob`]), outside the log lock, so a power failure can
    /// only take the entries of epochs whose first batch was written moments before:
    /// those lie in the active segment, or in the one before it when a roll came in
    /// between.
    fn recover_epochs_from_batches(&mut self) -> Result<(), LogError> {
        let n = self.segments.len();
        let from_seg = n.saturating_sub(2);
        let latest_start = self.epochs.entries().last().map(|(_, o)| *o);
        let mut found = 0;
        for seg in &self.segments[from_seg..] {
            if latest_start.is_some_and(|s| seg.next_offset() <= s) {
                continue;
            }
            let reader = seg.reader();
            let mut pos = 0;
            while let Some(h) = reader.header_at(pos).map_err(io_err(&self.dir))? {
                if h.partition_leader_epoch > self.epochs.latest_epoch() {
                    self.epochs
                        .assign(h.partition_leader_epoch, h.base_offset)
                        .map_err(io_err(&self.dir))?;
                    found += 1;
                }
                pos += h.total_len() as u64;
            }
        }
        if found > 0 {
            info!(dir = %self.dir.display(), epochs = found,
                "recovered leader epochs from the batches that the checkpoint file lacked");
        }
        Ok(())
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Batches replayed into the producer state when the log was opened.
    pub fn producer_batches_replayed(&self) -> u64 {
        self.producer_batches_replayed
    }

    /// Forgets producers idle for `expiration_ms` (`producer_id_expiration_ms`).
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// Installs the producer state as of `offset` taken from elsewhere (the tier's
    /// snapshot of the remote segment ending there) into a log that starts at
    /// `offset` (a replica restarted at the leader's log start): the state of the
    /// history this replica never had, plus a replay of everything it has since. Also
    /// kept as the local snapshot at the log start, for restarts. Returns false, and
    /// changes nothing, when the log no longer starts at `offset`.
    pub fn install_producer_snapshot(
        &mut self,
        offset: i64,
        table: ProducerStateTable,
    ) -> Result<bool, LogError> {
        if self.log_start_offset != offset {
            return Ok(false);
        }
        // Snapshots rolled since the reset lack the older state; recovery must start
        // from this one instead.
        producer::remove_snapshots_above(&self.dir, offset).map_err(io_err(&self.dir))?;
        producer::write_snapshot(&self.dir, offset, &table).map_err(io_err(&self.dir))?;
        // What was recorded since the reset is replayed on top of the older state
        // (the local table only knew the batches after `offset`).
        self.producers = table;
        for seg in &self.segments {
            let reader = seg.reader();
            let mut pos = 0;
            while let Some(h) = reader.header_at(pos).map_err(io_err(&self.dir))? {
                self.producers.record(&h);
                pos += h.total_len() as u64;
            }
        }
        Ok(true)
    }

    /// Deletes the producer snapshots of segments deleted from the front of the log.
    fn remove_snapshots_below_start(&self) -> Result<(), LogError> {
        producer::remove_snapshots_below(&self.dir, self.log_start_offset)
            .map_err(io_err(&self.dir))
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

    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let next = self.log_end_offset();
        let dir = self.dir.clone();
        let active = self.active_mut();
        active.seal().map_err(io_err(&dir))?;
        // fsynced by the next sync job, after the lock is released (as Kafka flushes
        // a rolled segment in the background).
        let base = self.active().base_offset();
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
            match self.producers.check(&h).map_err(LogError::Sequence)? {
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
            let bytes = &mut records.buf[range.clone()];
            batch::set_base_offset(bytes, next);
            batch::set_leader_epoch(bytes, leader_epoch);
            if self.config.log_append_time {
                batch::set_log_append_time(bytes, now_ms);
                h.max_timestamp = now_ms;
            }
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            let seg = self
                .segments
                .last_mut()
                .ok_or_else(|| LogError::Decode("no active segment".into()))?;
            seg.append(bytes, h).map_err(io_err(&dir))?;
            self.producers.record(h);
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
            if h.base_offset != end {
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
            seg.append(&records.buf[range.clone()], h)
                .map_err(io_err(&dir))?;
            self.producers.record(h);
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

    /// Whether a sync job is wanted now: `flush.messages` was reached, or the epoch
    /// checkpoint changed (it is fsynced as soon as the lock is released).
    pub fn sync_wanted(&self) -> bool {
        self.sync_due || self.epochs.is_dirty()
    }

    /// Takes what needs an fsync: rolled segments, a changed epoch checkpoint, and
    /// the active segment when `active` is set (`flush.messages`, `flush.ms`, or a
    /// caller that needs everything on disk) and it holds unflushed data. The caller
    /// runs the job without the lock and reports it with [`PartitionLog::synced`].
    pub fn take_sync(&mut self, now_ms: i64, active: bool) -> Result<Option<SyncJob>, LogError> {
        let dir = self.dir.clone();
        let mut files = Vec::new();
        for base in std::mem::take(&mut self.unsynced_segments) {
            let i = self.segment_index_for(base);
            // A segment deleted meanwhile needs no fsync.
            if let Some(seg) = self.segments.get(i).filter(|s| s.base_offset() == base) {
                files.extend(seg.sync_handles().map_err(io_err(&dir))?);
            }
        }
        let with_active = (active || self.sync_due) && self.unflushed_messages > 0;
        if with_active {
            files.extend(self.active().sync_handles().map_err(io_err(&dir))?);
            self.unflushed_messages = 0;
            self.last_flush_ms = now_ms;
        }
        self.sync_due = false;
        let epochs = self.epochs.take_dirty();
        if files.is_empty() && epochs.is_none() {
            if active {
                self.last_flush_ms = now_ms;
            }
            return Ok(None);
        }
        let upto = if with_active || self.unflushed_messages == 0 {
            self.log_end_offset()
        } else {
            self.active().base_offset()
        };
        Ok(Some(SyncJob {
            files,
            epochs,
            upto,
            generation: self.sync_generation,
        }))
    }

    /// Records the outcome of a job from [`PartitionLog::take_sync`].
    pub fn synced(&mut self, job: &SyncJob, ok: bool) {
        if !ok {
            self.sync_failed = true;
        }
        if ok && !self.sync_failed && job.generation == self.sync_generation {
            self.durable_end = self.durable_end.max(job.upto);
        }
    }

    /// Everything below this offset is on disk.
    pub fn durable_end(&self) -> i64 {
        if self.sync_failed {
            self.log_start_offset
        } else {
            self.durable_end
        }
    }

    /// Whether rolled segments wait for their fsync.
    pub fn has_unsynced_segments(&self) -> bool {
        !self.unsynced_segments.is_empty()
    }

    /// Whether `flush.ms` says the active segment is due for an fsync.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.unflushed_messages > 0 && now_ms - self.last_flush_ms >= self.config.flush_ms
    }

    /// fsyncs everything now, under the lock (clean shutdown only).
    fn sync_all_now(&mut self, now_ms: i64) -> Result<(), LogError> {
        if let Some(job) = self.take_sync(now_ms, true)? {
            let ok = job.run();
            self.synced(&job, ok.is_ok());
            ok.map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        let i = self.segments.partition_point(|s| s.base_offset() <= offset);
        i.saturating_sub(1)
    }

    /// Plans a read of whole batches starting with the one that contains `offset`.
    /// `offset == log end offset` yields an empty read (the caller may long-poll).
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadPlan, LogError> {
        self.plan_read_with(offset, max_bytes, min_one, ReadMode::Blocking)
    }

    /// [`PartitionLog::plan_read`]; in `Cached` mode an I/O error of kind
    /// `WouldBlock` when a batch header it must read is not in the page cache.
    pub fn plan_read_with(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        mode: ReadMode,
    ) -> Result<ReadPlan, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        let empty = ReadPlan {
            reader: None,
            pos: 0,
            max_bytes,
            min_one,
            max_offset: i64::MAX,
        };
        if offset == end {
            return Ok(empty);
        }
        let mut i = self.segment_index_for(offset);
        while i < self.segments.len() {
            let seg = &self.segments[i];
            if let Some(pos) = seg
                .find_position_with(offset, mode)
                .map_err(io_err(&self.dir))?
            {
                return Ok(ReadPlan {
                    reader: Some(seg.reader()),
                    pos,
                    max_bytes,
                    min_one,
                    max_offset: i64::MAX,
                });
            }
            i += 1;
        }
        Ok(empty)
    }

    /// Finds the first record with timestamp >= `ts`: `(offset, timestamp)`, or `None`
    /// when every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in &self.segments {
            if seg.max_timestamp() < ts {
                continue;
            }
            let reader = seg.reader();
            let mut pos = seg.time_search_start(ts);
            while let Some(h) = reader.header_at(pos).map_err(io_err(&self.dir))? {
                if h.max_timestamp >= ts {
                    let raw = reader.batch_at(pos, &h).map_err(io_err(&self.dir))?;
                    return Ok(Some(first_record_at_or_after(raw, &h, ts)?));
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let Some(seg) = self
            .segments
            .iter()
            .filter(|s| s.max_timestamp() >= 0)
            .max_by_key(|s| s.max_timestamp())
        else {
            return Ok(None);
        };
        self.offset_for_timestamp(seg.max_timestamp())
    }

    /// Starts a fresh segment holding `records` (the live state of a compacted topic)
    /// and schedules the deletion of every older segment for when the high watermark
    /// reaches the checkpoint's end ([`PartitionLog::apply_committed_checkpoint`]).
    /// Deleting at once would move the log start past followers that are in sync
    /// but have not fetched the checkpoint yet: they would restart empty at the new
    /// start, and one elected then would hold no live state at all. A crash before
    /// the deletes only leaves duplicates of live entries, which replay harmlessly.
    pub fn checkpoint(
        &mut self,
        records: Option<ValidatedRecords>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<PendingCheckpoint, LogError> {
        if !self.active().is_empty() {
            self.roll(now_ms)?;
        }
        let start = self.log_end_offset();
        if let Some(r) = records {
            self.append(r, leader_epoch, now_ms)?;
        }
        // The history goes only once the checkpoint is on disk (`durable_end`); the
        // caller runs the sync job after releasing the lock.
        self.sync_due = true;
        let pending = PendingCheckpoint {
            delete_below: start,
            once_hw: self.log_end_offset(),
        };
        self.pending_checkpoint = Some(pending);
        Ok(pending)
    }

    /// The checkpoint whose older segments are still kept, if any.
    pub fn pending_checkpoint(&self) -> Option<PendingCheckpoint> {
        self.pending_checkpoint
    }

    /// Deletes the segments a pending checkpoint replaces once `high_watermark` has
    /// reached its end. Returns how many segments were removed.
    pub fn apply_committed_checkpoint(&mut self, high_watermark: i64) -> Result<usize, LogError> {
        let Some(pending) = self.pending_checkpoint else {
            return Ok(0);
        };
        if high_watermark < pending.once_hw || self.durable_end() < pending.once_hw {
            return Ok(0);
        }
        self.pending_checkpoint = None;
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[0].base_offset() < pending.delete_below {
            let seg = self.segments.remove(0);
            seg.delete().map_err(io_err(&self.dir))?;
            removed += 1;
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        self.remove_snapshots_below_start()?;
        Ok(removed)
    }

    /// On a follower: deletes the closed segments wholly below the leader's log start,
    /// which the leader compacted or trimmed away; otherwise a follower of
    /// `__consumer_offsets` (never trimmed by retention) keeps its whole history.
    /// Waits until this log holds a record at or past that start: there the leader's
    /// checkpoint begins, the only copy of the live state once the history is gone.
    pub fn follow_log_start(&mut self, leader_start: i64) -> Result<usize, LogError> {
        if leader_start <= self.log_start_offset || leader_start >= self.log_end_offset() {
            return Ok(0);
        }
        let closed = self.segments.len() - 1;
        let n = self.segments[..closed]
            .iter()
            .take_while(|s| s.next_offset() <= leader_start)
            .count();
        if n == 0 {
            return Ok(0);
        }
        // What replaces the history must be on disk before the history goes: the
        // caller syncs (without the lock) and calls again.
        if self.durable_end() <= leader_start {
            self.sync_due = true;
            return Ok(0);
        }
        let doomed: Vec<Segment> = self.segments.drain(..n).collect();
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        for seg in doomed {
            seg.delete().map_err(io_err(&self.dir))?;
        }
        self.remove_snapshots_below_start()?;
        Ok(n)
    }

    /// Deletes every segment and restarts the log empty at `offset` (a follower whose
    /// log ends before the leader's log start).
    pub fn reset_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let fresh = Segment::create(&dir, offset, self.config.index_interval_bytes, now_ms)
            .map_err(io_err(&dir))?;
        for seg in std::mem::replace(&mut self.segments, vec![fresh]) {
            if seg.base_offset() != offset {
                seg.delete().map_err(io_err(&dir))?;
            }
        }
        self.log_start_offset = offset;
        self.pending_checkpoint = None;
        self.sync_generation += 1;
        self.durable_end = offset;
        self.unsynced_segments.clear();
        self.producers = ProducerStateTable::default();
        self.epochs.truncate_from(i64::MIN).map_err(io_err(&dir))?;
        // The state restarts empty, and so must recovery: no snapshot of the old log
        // may be loaded on top of the new one.
        producer::remove_snapshots_above(&dir, offset - 1).map_err(io_err(&dir))?;
        producer::remove_snapshots_below(&dir, offset).map_err(io_err(&dir))
    }

    /// Removes every record at or after `offset` (used when a replica's tail diverges).
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let offset = offset.max(self.log_start_offset);
        while self.segments.len() > 1 && self.active().base_offset() >= offset {
            if let Some(seg) = self.segments.pop() {
                seg.delete().map_err(io_err(&self.dir))?;
            }
        }
        if self.pending_checkpoint.is_some_and(|p| p.once_hw > offset) {
            // The checkpoint is (partly) cut away: what it replaces must stay.
            self.pending_checkpoint = None;
        }
        let dir = self.dir.clone();
        self.active_mut()
            .truncate_to(offset)
            .map_err(io_err(&dir))?;
        self.sync_generation += 1;
        self.durable_end = self.durable_end.min(self.log_end_offset());
        self.producers.truncate_to(offset);
        self.epochs.truncate_from(offset).map_err(io_err(&dir))?;
        producer::remove_snapshots_above(&dir, offset).map_err(io_err(&dir))
    }

    /// Flushes everything before a clean shutdown.
    pub fn close(&mut self, now_ms: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        self.active_mut().seal().map_err(io_err(&dir))?;
        self.sync_all_now(now_ms)?;
        self.epochs.sync_now().map_err(io_err(&dir))?;
        self.active().sync().map_err(io_err(&dir))
    }
}

/// Decodes one stored batch to find the first record at or after `ts`.
pub(crate) fn first_record_at_or_after(
    raw: Bytes,
    h: &BatchHeader,
    ts: i64,
) -> Result<(i64, i64), LogError> {
    if h.attributes & 0x08 != 0 {
        // LogAppendTime: every record carries the batch's max timestamp.
        return Ok((h.base_offset, h.max_timestamp));
    }
    let mut buf = raw;
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| LogError::Decode(e.to_string()))?;
    Ok(set
        .records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp))
        .unwrap_or((h.last_offset(), h.max_timestamp)))
}

#[cfg(test)]
mod tests;
