//! Reads: planning a fetch under the log lock (which segment, which byte position)
//! and executing it without the lock, optionally from the page cache only
//! ([`ReadMode::Cached`]); timestamp lookups for ListOffsets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::{self, BatchHeader};
use super::segment::{ReadMode, SegmentReader};
use super::{io_err, LogError, PartitionLog};

/// A planned fetch read, executed without the partition lock.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    reader: Option<SegmentReader>,
    pos: u64,
    max_bytes: usize,
    min_one: bool,
    /// Batches ending at or beyond this offset are left out (the high watermark).
    max_offset: i64,
    /// The log's rewrite counter and its value when the plan was made.
    rewrites: Arc<AtomicU64>,
    generation: u64,
}

/// Whole batches of one segment, located but not read: a fetch sends them from the
/// file (`sendfile`) or reads them ([`FileSlice::read`]). The file stays open while a
/// slice holds it, so a segment deleted by retention, rolled or cleaned meanwhile is
/// still served as planned; bytes rewritten in place (a truncation) are detected by
/// [`FileSlice::unchanged`], to be checked after the bytes were taken from the file.
#[derive(Debug, Clone)]
pub struct FileSlice {
    file: Arc<File>,
    pos: u64,
    len: usize,
    records: u64,
    rewrites: Arc<AtomicU64>,
    generation: u64,
}

impl FileSlice {
    pub fn file(&self) -> &File {
        &self.file
    }
    /// Byte position in the file.
    pub fn pos(&self) -> u64 {
        self.pos
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Records in the slice's batches.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether no truncation of the log began since the plan: true means every byte
    /// taken from the file before this call is what was planned.
    pub fn unchanged(&self) -> bool {
        self.rewrites.load(Ordering::SeqCst) == self.generation
    }

    /// Copies the slice into memory (TLS connections, and as the test's reference).
    pub fn read(&self) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact_at(&mut buf, self.pos)?;
        if !self.unchanged() {
            return Err(io::Error::other("segment truncated during the read"));
        }
        Ok(buf.freeze())
    }
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

    /// Finds the bytes [`ReadPlan::read_with`] would return (the same batches: whole
    /// ones within `max_bytes`, the first one whole when `min_one`, none ending at or
    /// past the limit) reading only their headers. `None` when there are none.
    pub fn locate_with(&self, mode: ReadMode) -> io::Result<Option<FileSlice>> {
        let Some(r) = &self.reader else {
            return Ok(None);
        };
        if self.pos >= r.size() {
            return Ok(None);
        }
        let avail = r.size() - self.pos;
        let want = (self.max_bytes as u64).min(avail);
        let (mut end, mut records) = (self.pos, 0u64);
        while let Some(h) = r.header_with(end, mode)? {
            let total = h.total_len() as u64;
            let first = end == self.pos;
            let fits = end + total - self.pos <= want;
            // Beyond the budget only the first batch goes, and only with `min_one`.
            let first_whole = first && self.min_one && total <= avail;
            if !(fits || first_whole) {
                break;
            }
            if h.last_offset() >= self.max_offset {
                break;
            }
            end += total;
            records += h.records_count.max(0) as u64;
            if !fits {
                break;
            }
        }
        if end == self.pos {
            return Ok(None);
        }
        Ok(Some(FileSlice {
            file: Arc::clone(r.file()),
            pos: self.pos,
            len: (end - self.pos) as usize,
            records,
            rewrites: Arc::clone(&self.rewrites),
            generation: self.generation,
        }))
    }
}

impl PartitionLog {
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
        let generation = self.rewrites.load(Ordering::SeqCst);
        let empty = ReadPlan {
            reader: None,
            pos: 0,
            max_bytes,
            min_one,
            max_offset: i64::MAX,
            rewrites: Arc::clone(&self.rewrites),
            generation,
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
                    ..empty
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
