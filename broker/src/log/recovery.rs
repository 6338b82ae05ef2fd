//! Opening a log and what it must rebuild: the segments (an unclean shutdown
//! re-validates the active one and cuts a torn tail), the producer state (the newest
//! snapshot plus a replay of the batch headers after it, or a snapshot fetched from
//! the tier), and leader epochs the checkpoint file may have lost.

use std::fs;
use std::io;
use std::path::Path;

use tracing::{debug, info};

use super::epochs::LeaderEpochCache;
use super::segment::{self, Segment, SegmentReader};
use super::txn_index::TxnIndex;
use super::{io_err, record_batch, LogConfig, LogError, PartitionLog};
use crate::producer::{self, ProducerStateTable};

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
        super::cleaner::recover_swaps(dir).map_err(io_err(dir))?;
        let gaps = config.compaction.is_some() || dir.join(super::cleaner::GAPS_MARKER).exists();
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
            let (seg, report) = Segment::open_with_gaps(
                dir,
                *base,
                config.index_interval_bytes,
                full,
                now_ms,
                gaps,
            )
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
            txns: TxnIndex::open(dir).map_err(io_err(dir))?,
            remote_end_offset: -1,
            producer_batches_replayed: 0,
            unsynced_segments: Vec::new(),
            sync_due: false,
            durable_end: 0,
            sync_generation: 0,
            rewrites: Default::default(),
            sync_failed: false,
            deleted_below: 0,
        };
        log.rebuild_producer_state()?;
        let end = log.log_end_offset();
        // Epochs that start beyond a recovered (truncated) tail are gone with it.
        log.epochs.truncate_from(end + 1).map_err(io_err(dir))?;
        log.load_log_start_checkpoint(now_ms)?;
        let end = log.log_end_offset();
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
    pub(super) fn rebuild_producer_state(&mut self) -> Result<(), LogError> {
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
        // The replay re-derives the transactions decided from `from` on.
        self.txns.truncate_from(from).map_err(io_err(&self.dir))?;
        let mut replayed = 0;
        let mut todo: Vec<(SegmentReader, u64)> = Vec::new();
        for seg in self.segments.iter().filter(|s| s.next_offset() > from) {
            let pos = seg
                .find_position(from)
                .map_err(io_err(&self.dir))?
                .unwrap_or(0);
            todo.push((seg.reader(), pos));
        }
        for (reader, mut pos) in todo {
            while let Some(h) = reader.header_at(pos).map_err(io_err(&self.dir))? {
                if h.base_offset >= from {
                    self.replay_batch(&reader, pos, &h)?;
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
        self.txns
            .truncate_from(i64::MIN)
            .map_err(io_err(&self.dir))?;
        let segments: Vec<SegmentReader> = self.segments.iter().map(Segment::reader).collect();
        for reader in segments {
            let mut pos = 0;
            while let Some(h) = reader.header_at(pos).map_err(io_err(&self.dir))? {
                self.replay_batch(&reader, pos, &h)?;
                pos += h.total_len() as u64;
            }
        }
        Ok(true)
    }

    /// Applies one stored batch to the producer and transaction state; only a
    /// control batch is read beyond its header.
    fn replay_batch(
        &mut self,
        reader: &SegmentReader,
        pos: u64,
        h: &super::batch::BatchHeader,
    ) -> Result<(), LogError> {
        let bytes = if h.is_control() {
            reader.batch_at(pos, h).map_err(io_err(&self.dir))?
        } else {
            bytes::Bytes::new()
        };
        record_batch(&mut self.producers, &mut self.txns, h, &bytes).map_err(io_err(&self.dir))
    }

    /// Deletes the producer snapshots of segments deleted from the front of the log.
    /// Also forgets the aborted transactions that ended below it, unless the topic is
    /// tiered: `read_committed` reads from the tier still need those.
    pub(super) fn remove_snapshots_below_start(&mut self) -> Result<(), LogError> {
        if self.config.remote.is_none() {
            self.txns
                .remove_below(self.log_start_offset)
                .map_err(io_err(&self.dir))?;
        }
        producer::remove_snapshots_below(&self.dir, self.log_start_offset)
            .map_err(io_err(&self.dir))
    }

    /// Forgets producers idle for `expiration_ms` (`producer_id_expiration_ms`).
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }
}
