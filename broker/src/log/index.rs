//! Sparse per-segment indexes. The offset index maps a relative offset to a byte
//! position in the segment file; the time index maps a running max timestamp to the
//! relative offset of the batch that reached it. Both are kept in memory (they are
//! sparse: one entry per `index.interval.bytes`) and appended to files beside the
//! segment so a restart does not need to rescan closed segments.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of memory held by the index entries of every open segment of the broker
/// (`strata_log_index_memory_bytes`).
static INDEX_MEMORY_BYTES: AtomicU64 = AtomicU64::new(0);

/// Memory held by all index entries now, in bytes.
pub fn memory_bytes() -> u64 {
    INDEX_MEMORY_BYTES.load(Ordering::Relaxed)
}

/// Offset index entry: (offset relative to the segment base, byte position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Time index entry: (max timestamp so far, relative offset of the batch that set it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// An append-only file of fixed-size entries mirrored in memory.
#[derive(Debug)]
pub struct IndexFile<E> {
    path: PathBuf,
    file: File,
    entries: Vec<E>,
    /// The bytes of `entries` counted in [`INDEX_MEMORY_BYTES`].
    counted: u64,
}

impl<E> Drop for IndexFile<E> {
    fn drop(&mut self) {
        INDEX_MEMORY_BYTES.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// Fixed-size binary encoding of an index entry.
pub trait Entry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
    /// Ordering key used to check that a loaded file is monotonic.
    fn key(&self) -> (i64, u32);
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn key(&self) -> (i64, u32) {
        (i64::from(self.relative_offset), self.position)
    }
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
    fn key(&self) -> (i64, u32) {
        (self.timestamp, self.relative_offset)
    }
}

impl<E: Entry> IndexFile<E> {
    /// Creates an empty index, truncating any file at `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .read(true)
            .open(path)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            entries: Vec::new(),
            counted: 0,
        })
    }

    /// Loads an index file. Returns `None` when it is missing or not a well-formed,
    /// strictly increasing sequence, so the caller rebuilds it from the segment.
    pub fn load(path: &Path) -> io::Result<Option<Self>> {
        let mut file = match OpenOptions::new().read(true).append(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        let Some(entries) = parse_entries(&raw) else {
            return Ok(None);
        };
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            entries,
            counted: 0,
        };
        index.recount();
        Ok(Some(index))
    }

    /// Brings [`INDEX_MEMORY_BYTES`] up to date with the entries' allocation.
    fn recount(&mut self) {
        let now = (self.entries.capacity() * std::mem::size_of::<E>()) as u64;
        if now >= self.counted {
            INDEX_MEMORY_BYTES.fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            INDEX_MEMORY_BYTES.fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Appends one entry to memory and to the file (page cache; see `sync`).
    pub fn append(&mut self, e: E) -> io::Result<()> {
        let mut buf = Vec::with_capacity(E::SIZE);
        e.encode(&mut buf);
        self.file.write_all(&buf)?;
        self.entries.push(e);
        self.recount();
        Ok(())
    }

    /// Replaces the whole index (after a rebuild), rewriting the file.
    pub fn replace(&mut self, entries: Vec<E>) -> io::Result<()> {
        let mut buf = Vec::with_capacity(entries.len() * E::SIZE);
        for e in &entries {
            e.encode(&mut buf);
        }
        self.file = File::create(&self.path)?;
        self.file.write_all(&buf)?;
        self.entries = entries;
        self.recount();
        Ok(())
    }

    /// Drops entries for which `keep` is false from the end (after a truncation).
    pub fn truncate_while(&mut self, mut drop: impl FnMut(&E) -> bool) -> io::Result<()> {
        let before = self.entries.len();
        while self.entries.last().is_some_and(&mut drop) {
            self.entries.pop();
        }
        if self.entries.len() != before {
            self.file.set_len((self.entries.len() * E::SIZE) as u64)?;
        }
        Ok(())
    }

    /// Keeps the first `len` entries, in memory and in the file, where it also cuts
    /// off the bytes an append that failed half-way may have left, so the next
    /// append follows the last whole entry.
    pub fn truncate_to_len(&mut self, len: usize) -> io::Result<()> {
        self.entries.truncate(len);
        self.file.set_len((self.entries.len() * E::SIZE) as u64)?;
        // A file from `create` is written at its cursor, not appended to.
        self.file.seek(SeekFrom::End(0))?;
        Ok(())
    }

    /// Test seam: from now on every write to the file fails (the handle becomes
    /// read-only), as on a full or failing disk.
    #[cfg(test)]
    pub(crate) fn fail_writes(&mut self) -> io::Result<()> {
        self.file = File::open(&self.path)?;
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the file, to fsync it without the log lock.
    pub fn handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Decodes index file bytes. `None` when they are not a whole number of entries in
/// strictly increasing order (a torn or damaged file, local or fetched from the tier).
pub fn parse_entries<E: Entry>(raw: &[u8]) -> Option<Vec<E>> {
    if !raw.len().is_multiple_of(E::SIZE) {
        return None;
    }
    let entries: Vec<E> = raw.chunks_exact(E::SIZE).map(E::decode).collect();
    if entries.windows(2).any(|w| w[0].key() >= w[1].key()) {
        return None;
    }
    Some(entries)
}

/// Largest entry with `relative_offset <= target`, i.e. where to start scanning.
pub fn floor(entries: &[OffsetEntry], relative_offset: u32) -> Option<OffsetEntry> {
    let i = entries.partition_point(|e| e.relative_offset <= relative_offset);
    i.checked_sub(1).map(|i| entries[i])
}

/// Last entry whose timestamp is strictly below `ts`: every batch up to the one it
/// names is older than `ts`, so a search for `ts` may start there.
pub fn last_below(entries: &[TimeEntry], ts: i64) -> Option<TimeEntry> {
    let i = entries.partition_point(|e| e.timestamp < ts);
    i.checked_sub(1).map(|i| entries[i])
}

impl IndexFile<OffsetEntry> {
    /// See [`floor`].
    pub fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        floor(&self.entries, relative_offset)
    }
}

impl IndexFile<TimeEntry> {
    /// See [`last_below`].
    pub fn last_below(&self, ts: i64) -> Option<TimeEntry> {
        last_below(&self.entries, ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let mut idx = IndexFile::<OffsetEntry>::create(&p).unwrap();
        for (o, pos) in [(0, 0), (10, 4096), (20, 8200)] {
            idx.append(OffsetEntry {
                relative_offset: o,
                position: pos,
            })
            .unwrap();
        }
        assert_eq!(idx.floor(15).unwrap().position, 4096);
        assert_eq!(idx.floor(20).unwrap().position, 8200);
        assert_eq!(idx.floor(0).unwrap().position, 0);
        let loaded = IndexFile::<OffsetEntry>::load(&p).unwrap().unwrap();
        assert_eq!(loaded.entries(), idx.entries());
    }

    #[test]
    fn malformed_index_is_rejected_for_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        std::fs::write(&p, [0u8; 7]).unwrap();
        assert!(IndexFile::<OffsetEntry>::load(&p).unwrap().is_none());
        // Non-monotonic entries.
        let mut raw = Vec::new();
        OffsetEntry {
            relative_offset: 5,
            position: 10,
        }
        .encode(&mut raw);
        OffsetEntry {
            relative_offset: 3,
            position: 20,
        }
        .encode(&mut raw);
        std::fs::write(&p, raw).unwrap();
        assert!(IndexFile::<OffsetEntry>::load(&p).unwrap().is_none());
        assert!(IndexFile::<OffsetEntry>::load(&dir.path().join("missing"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn time_index_last_below() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = IndexFile::<TimeEntry>::create(&dir.path().join("t")).unwrap();
        for (ts, o) in [(100, 0), (200, 5), (300, 9)] {
            idx.append(TimeEntry {
                timestamp: ts,
                relative_offset: o,
            })
            .unwrap();
        }
        assert_eq!(idx.last_below(100), None);
        assert_eq!(idx.last_below(250).unwrap().relative_offset, 5);
        assert_eq!(idx.last_below(1000).unwrap().relative_offset, 9);
    }
}
