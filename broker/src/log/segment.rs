//! One segment of a partition log: `<base>.log` holds RecordBatch v2 bytes back to
//! back, `<base>.index` and `<base>.timeindex` are its sparse indexes. A segment is
//! appended to only while it is the active (last) one; readers hold an `Arc<File>`
//! so a segment deleted by retention stays readable until their read completes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use super::index::{IndexFile, OffsetEntry, TimeEntry};

/// File name stem of a segment: the base offset, zero-padded to 20 digits like Kafka.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Parses a segment base offset from a `.log` file name.
pub fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Result of scanning a segment file on open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut off the end because they were not a whole, valid batch.
    pub truncated_bytes: u64,
    pub batches_scanned: u64,
}

#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    log: Arc<File>,
    size: u64,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    /// One past the last offset stored (== base_offset when empty).
    next_offset: i64,
    /// Largest batch max-timestamp seen, or -1.
    max_timestamp: i64,
    /// Relative offset of the batch that set `max_timestamp`.
    max_timestamp_rel: u32,
    index_interval: u64,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
    created_at_ms: i64,
}

impl Segment {
    /// Creates a new empty segment (truncating leftovers with the same name).
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        now_ms: i64,
    ) -> io::Result<Self> {
        let stem = file_stem(base_offset);
        let log_path = dir.join(format!("{stem}.log"));
        let log = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&log_path)?;
        Ok(Segment::assemble(
            base_offset,
            log_path,
            log,
            IndexFile::create(&dir.join(format!("{stem}.index")))?,
            IndexFile::create(&dir.join(format!("{stem}.timeindex")))?,
            index_interval,
            now_ms,
        ))
    }

    fn assemble(
        base_offset: i64,
        log_path: PathBuf,
        log: File,
        offset_index: IndexFile<OffsetEntry>,
        time_index: IndexFile<TimeEntry>,
        index_interval: u64,
        now_ms: i64,
    ) -> Self {
        Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size: 0,
            offset_index,
            time_index,
            next_offset: base_offset,
            max_timestamp: -1,
            max_timestamp_rel: 0,
            index_interval,
            bytes_since_offset_entry: 0,
            bytes_since_time_entry: 0,
            created_at_ms: now_ms,
        }
    }

    /// Opens an existing segment. With `full_recovery` every batch is re-validated
    /// (length, magic, CRC32C, offsets) and anything after the first bad batch is cut
    /// off; otherwise the indexes are trusted and only the tail after the last index
    /// entry is scanned. Missing or malformed indexes are rebuilt either way.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        full_recovery: bool,
        now_ms: i64,
    ) -> io::Result<(Self, RecoveryReport)> {
        Segment::open_with_gaps(
            dir,
            base_offset,
            index_interval,
            full_recovery,
            now_ms,
            false,
        )
    }

    /// [`Segment::open`] for a compacted log, whose batches may leave gaps between
    /// their offsets (the cleaner removed the records there): offsets must still grow.
    pub fn open_with_gaps(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        full_recovery: bool,
        now_ms: i64,
        gaps: bool,
    ) -> io::Result<(Self, RecoveryReport)> {
        let stem = file_stem(base_offset);
        let log_path = dir.join(format!("{stem}.log"));
        let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let file_size = log.metadata()?.len();
        let oi_path = dir.join(format!("{stem}.index"));
        let ti_path = dir.join(format!("{stem}.timeindex"));
        let loaded = if full_recovery {
            None
        } else {
            match (
                IndexFile::<OffsetEntry>::load(&oi_path)?,
                IndexFile::<TimeEntry>::load(&ti_path)?,
            ) {
                (Some(oi), Some(ti)) => Some((oi, ti)),
                _ => None,
            }
        };
        let (mut offset_index, mut time_index, rebuilt) = match loaded {
            Some((oi, ti)) => (oi, ti, false),
            None => (
                IndexFile::create(&oi_path)?,
                IndexFile::create(&ti_path)?,
                true,
            ),
        };
        // Entries past the end of the data cannot be trusted.
        offset_index.truncate_while(|e| u64::from(e.position) >= file_size)?;
        let start = offset_index.last().map_or(0, |e| u64::from(e.position));
        let last_rel = offset_index.last().map(|e| e.relative_offset);
        if let Some(rel) = last_rel {
            // Entries at and after the scan start are re-added by the scan.
            offset_index.truncate_while(|e| e.relative_offset >= rel)?;
            time_index.truncate_while(|e| e.relative_offset >= rel)?;
        }
        let max_timestamp = time_index.last().map_or(-1, |e| e.timestamp);
        let mut seg = Segment::assemble(
            base_offset,
            log_path,
            log,
            offset_index,
            time_index,
            index_interval,
            now_ms,
        );
        seg.max_timestamp = max_timestamp;
        seg.size = start;
        // The batch at `start` begins at the offset its index entry names.
        seg.next_offset = base_offset + i64::from(last_rel.unwrap_or(0));
        let report = seg.scan_from(start, file_size, full_recovery || rebuilt, gaps)?;
        if report.truncated_bytes > 0 {
            warn!(
                segment = %seg.log_path.display(),
                valid_bytes = seg.size,
                truncated_bytes = report.truncated_bytes,
                "truncating torn or corrupt segment tail"
            );
            seg.log.set_len(seg.size)?;
        }
        Ok((seg, report))
    }

    /// Scans batches from `start` to `end`, re-adding index entries and advancing the
    /// segment's size, next offset and max timestamp. Stops at the first bad batch.
    fn scan_from(
        &mut self,
        start: u64,
        end: u64,
        verify_crc: bool,
        gaps: bool,
    ) -> io::Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let file = Arc::clone(&self.log);
        let mut reader = BufReader::with_capacity(1 << 20, FileRef(&file, start));
        let mut pos = start;
        let mut buf = Vec::new();
        while pos < end {
            let mut head = [0u8; HEADER_LEN];
            if end - pos < HEADER_LEN as u64 || reader.read_exact(&mut head).is_err() {
                break;
            }
            let Ok(h) = BatchHeader::parse(&head) else {
                break;
            };
            let total = h.total_len() as u64;
            // Offsets inside a segment are contiguous; anything else is damage (the base
            // offset is not covered by the CRC, so this check is what catches it).
            let expected = if self.size == 0 {
                self.base_offset
            } else {
                self.next_offset
            };
            let misplaced = if gaps {
                h.base_offset < expected
            } else {
                h.base_offset != expected
            };
            if pos + total > end || misplaced {
                break;
            }
            if verify_crc {
                buf.clear();
                buf.extend_from_slice(&head);
                buf.resize(total as usize, 0);
                if reader.read_exact(&mut buf[HEADER_LEN..]).is_err()
                    || batch::validate_stored(&buf).is_err()
                {
                    break;
                }
            } else if io::copy(
                &mut (&mut reader).take(total - HEADER_LEN as u64),
                &mut io::sink(),
            )? != total - HEADER_LEN as u64
            {
                break;
            }
            self.index_batch(&h, total)?;
            pos += total;
            report.batches_scanned += 1;
        }
        report.truncated_bytes = end - pos;
        Ok(report)
    }

    /// Records a batch that has just been written at `self.size` in the indexes.
    fn index_batch(&mut self, h: &BatchHeader, total: u64) -> io::Result<()> {
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.offset_index.entries().is_empty()
            || self.bytes_since_offset_entry >= self.index_interval
        {
            self.offset_index.append(OffsetEntry {
                relative_offset: rel,
                position: self.size as u32,
            })?;
            self.bytes_since_offset_entry = 0;
        }
        self.bytes_since_offset_entry += total;
        self.bytes_since_time_entry += total;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.max_timestamp_rel = rel;
            if self.time_index.entries().is_empty()
                || self.bytes_since_time_entry >= self.index_interval
            {
                self.append_time_entry(rel)?;
            }
        }
        self.size += total;
        self.next_offset = h.last_offset() + 1;
        Ok(())
    }

    fn append_time_entry(&mut self, rel: u32) -> io::Result<()> {
        if self
            .time_index
            .last()
            .is_some_and(|e| e.timestamp >= self.max_timestamp || e.relative_offset >= rel)
        {
            return Ok(());
        }
        self.time_index.append(TimeEntry {
            timestamp: self.max_timestamp,
            relative_offset: rel,
        })?;
        self.bytes_since_time_entry = 0;
        Ok(())
    }

    /// Appends one validated batch whose base offset has already been assigned.
    ///
    /// A failed append leaves nothing behind. Its bytes (some or all of them) would
    /// sit past `size`, where no reader looks, but opening the segment again scans
    /// past the last index entry and would take a whole batch found there as part
    /// of the log: a write answered as failed (`KAFKA_STORAGE_ERROR`, which clients
    /// retry as *not* written) would come back after a restart, beside its retry.
    pub fn append(&mut self, bytes: &[u8], h: &BatchHeader) -> io::Result<()> {
        self.append_parts(bytes, &[], h)
    }

    /// [`Segment::append`] of a batch held in two pieces (a patched header and the
    /// rest), written with one positional vectored write.
    pub fn append_parts(&mut self, head: &[u8], body: &[u8], h: &BatchHeader) -> io::Result<()> {
        let before = (
            self.offset_index.entries().len(),
            self.time_index.entries().len(),
            self.bytes_since_offset_entry,
            self.bytes_since_time_entry,
            self.max_timestamp,
            self.max_timestamp_rel,
        );
        let len = (head.len() + body.len()) as u64;
        let result = write_all_vectored_at(&self.log, head, body, self.size)
            .and_then(|()| self.index_batch(h, len));
        if let Err(e) = result {
            let (offsets, times, since_offset, since_time, max_ts, max_ts_rel) = before;
            self.bytes_since_offset_entry = since_offset;
            self.bytes_since_time_entry = since_time;
            self.max_timestamp = max_ts;
            self.max_timestamp_rel = max_ts_rel;
            // `index_batch` moves `size` and `next_offset` only once everything is
            // written, so they still describe the log without this batch.
            let undone = self
                .log
                .set_len(self.size)
                .and_then(|()| self.offset_index.truncate_to_len(offsets))
                .and_then(|()| self.time_index.truncate_to_len(times));
            if let Err(undo) = undone {
                warn!(segment = %self.log_path.display(), error = %undo, append_error = %e,
                    "cannot cut off a failed append");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Called when the segment stops being the active one: records the final max
    /// timestamp in the time index so a reload knows it without a scan.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.max_timestamp >= 0 {
            self.append_time_entry(self.max_timestamp_rel)?;
        }
        Ok(())
    }

    /// Byte position of the batch containing `offset`, or `None` if it is past the end.
    pub fn find_position(&self, offset: i64) -> io::Result<Option<u64>> {
        self.find_position_with(offset, ReadMode::Blocking)
    }

    /// [`Segment::find_position`], failing with `WouldBlock` in `Cached` mode when a
    /// header it needs is not in the page cache.
    pub fn find_position_with(&self, offset: i64, mode: ReadMode) -> io::Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset).max(0) as u32;
        let mut pos = self
            .offset_index
            .floor(rel)
            .map_or(0, |e| u64::from(e.position));
        let mut head = [0u8; HEADER_LEN];
        while pos < self.size {
            read_exact_at(&self.log, &mut head, pos, mode)?;
            let h = BatchHeader::parse(&head)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if h.last_offset() >= offset {
                return Ok(Some(pos));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// First position whose batch may hold a record with timestamp >= `ts`.
    pub fn time_search_start(&self, ts: i64) -> u64 {
        match self.time_index.last_below(ts) {
            Some(e) => self
                .offset_index
                .floor(e.relative_offset)
                .map_or(0, |o| u64::from(o.position)),
            None => 0,
        }
    }

    /// Snapshot of what a reader needs, so the read itself happens without the log lock.
    pub fn reader(&self) -> SegmentReader {
        SegmentReader {
            file: Arc::clone(&self.log),
            size: self.size,
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// Cuts the segment back to hold only offsets below `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let Some(pos) = self.find_position(offset)? else {
            return Ok(());
        };
        // The batch at `pos` holds `offset`; everything from it on goes.
        self.log.set_len(pos)?;
        let rel_limit = (offset - self.base_offset).max(0) as u32;
        self.offset_index
            .truncate_while(|e| u64::from(e.position) >= pos)?;
        self.time_index
            .truncate_while(|e| e.relative_offset >= rel_limit)?;
        let start = self
            .offset_index
            .last()
            .map_or(0, |e| u64::from(e.position));
        if let Some(rel) = self.offset_index.last().map(|e| e.relative_offset) {
            self.offset_index
                .truncate_while(|e| e.relative_offset >= rel)?;
        }
        self.size = start;
        self.next_offset = self.base_offset;
        self.max_timestamp = self.time_index.last().map_or(-1, |e| e.timestamp);
        if start > 0 {
            // Re-derive next_offset from the batches kept before `start`.
            self.next_offset = self.last_offset_before(start)? + 1;
        }
        // Only batches that were scanned before are re-read: gaps among them are real.
        self.scan_from(start, pos, false, true)?;
        Ok(())
    }

    fn last_offset_before(&self, end: u64) -> io::Result<i64> {
        let mut pos = 0;
        let mut last = self.base_offset - 1;
        let mut head = [0u8; HEADER_LEN];
        while pos < end {
            self.log.read_exact_at(&mut head, pos)?;
            let h = BatchHeader::parse(&head)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            last = h.last_offset();
            pos += h.total_len() as u64;
        }
        Ok(last)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.log.sync_data()?;
        self.offset_index.sync()?;
        self.time_index.sync()
    }

    /// Second handles on the segment's files (data, offset and time index), so they
    /// can be fsynced after the log lock is released.
    pub fn sync_handles(&self) -> io::Result<[File; 3]> {
        Ok([
            self.log.try_clone()?,
            self.offset_index.handle()?,
            self.time_index.handle()?,
        ])
    }

    /// Removes the segment's files.
    pub fn delete(self) -> io::Result<()> {
        let stem = self.log_path.with_extension("");
        fs::remove_file(&self.log_path)?;
        for ext in ["index", "timeindex"] {
            match fs::remove_file(stem.with_extension(ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads committed bytes of one segment without holding the partition lock.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    file: Arc<File>,
    size: u64,
}

impl SegmentReader {
    /// Reads whole batches starting at `pos`, up to `max_bytes`. When the first batch
    /// alone is larger than `max_bytes` it is returned whole if `min_one` is set (KIP-74),
    /// so a consumer can always make progress.
    pub fn read_batches(&self, pos: u64, max_bytes: usize, min_one: bool) -> io::Result<Bytes> {
        self.read_batches_with(pos, max_bytes, min_one, ReadMode::Blocking)
    }

    /// [`SegmentReader::read_batches`] that fails with `WouldBlock` instead of
    /// waiting for the disk when `mode` is `Cached` and the bytes are not all in the
    /// page cache (`RWF_NOWAIT`): the async runtime serves hot reads itself and hands
    /// only cold ones to a blocking thread.
    pub fn read_batches_with(
        &self,
        pos: u64,
        max_bytes: usize,
        min_one: bool,
        mode: ReadMode,
    ) -> io::Result<Bytes> {
        if pos >= self.size {
            return Ok(Bytes::new());
        }
        let avail = (self.size - pos) as usize;
        let want = max_bytes.min(avail);
        let mut buf = BytesMut::zeroed(want.max(LOG_OVERHEAD.min(avail)));
        read_exact_at(&self.file, &mut buf, pos, mode)?;
        let mut whole = 0usize;
        for (h, at) in batch::headers(&buf) {
            whole = at + h.total_len();
        }
        if whole == 0 && min_one && buf.len() >= LOG_OVERHEAD {
            let len = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
            let total = LOG_OVERHEAD + len.max(0) as usize;
            if total <= avail {
                let mut one = BytesMut::zeroed(total);
                read_exact_at(&self.file, &mut one, pos, mode)?;
                return Ok(one.freeze());
            }
        }
        buf.truncate(whole);
        Ok(buf.freeze())
    }

    /// Reads the header of the batch at `pos`.
    pub fn header_at(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, pos)?;
        Ok(BatchHeader::parse(&head).ok())
    }

    /// [`SegmentReader::header_at`] in `mode` (`WouldBlock` when `Cached` and the
    /// header is not in the page cache).
    pub fn header_with(&self, pos: u64, mode: ReadMode) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        read_exact_at(&self.file, &mut head, pos, mode)?;
        Ok(BatchHeader::parse(&head).ok())
    }

    /// The segment's data file (shared: it stays open while a reader holds it).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Reads the whole batch at `pos`.
    pub fn batch_at(&self, pos: u64, h: &BatchHeader) -> io::Result<Bytes> {
        let mut b = BytesMut::zeroed(h.total_len());
        self.file.read_exact_at(&mut b, pos)?;
        Ok(b.freeze())
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// How a read may wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// An ordinary positional read (on a blocking thread).
    Blocking,
    /// Only what the page cache holds; anything else is `WouldBlock`.
    Cached,
}

/// Set once the kernel or file system refused `RWF_NOWAIT`: every read blocks then.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

fn read_exact_at(file: &File, buf: &mut [u8], pos: u64, mode: ReadMode) -> io::Result<()> {
    if mode == ReadMode::Blocking {
        return file.read_exact_at(buf, pos);
    }
    if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let Ok(offset) = libc::off_t::try_from(pos) else {
        return Err(io::ErrorKind::WouldBlock.into());
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of its whole length
    // and outlives the call; the descriptor belongs to `file`, which is borrowed.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        ) {
            NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        return Err(e);
    }
    // A short read stops where the cache does (or at the end of the file, which the
    // blocking read reports as an error).
    if (n as usize) < buf.len() {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(())
}

/// Writes `a` then `b` at `pos` (`pwritev`, repeated on a short write).
fn write_all_vectored_at(file: &File, a: &[u8], b: &[u8], pos: u64) -> io::Result<()> {
    let mut done = 0usize;
    let total = a.len() + b.len();
    while done < total {
        let (x, y) = if done < a.len() {
            (&a[done..], b)
        } else {
            (&b[done - a.len()..], &[][..])
        };
        let iov = [
            libc::iovec {
                iov_base: x.as_ptr() as *mut libc::c_void,
                iov_len: x.len(),
            },
            libc::iovec {
                iov_base: y.as_ptr() as *mut libc::c_void,
                iov_len: y.len(),
            },
        ];
        let at = libc::off_t::try_from(pos + done as u64).map_err(io::Error::other)?;
        // SAFETY: both iovecs describe live slices, which the call only reads; the
        // descriptor belongs to `file`, which is borrowed for the call.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), 2, at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// `Read` over a shared file from a starting position, using positional reads.
struct FileRef<'a>(&'a File, u64);

impl Read for FileRef<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
