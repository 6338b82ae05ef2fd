//! One cleaning of one partition log, done without the partition lock: reads the
//! planned segments through reader snapshots, builds the offset map of the dirty
//! ones, and writes each segment that loses something to `<base>.log.cleaned`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::filter::{self, Context, Decision, FilterError, FilterStats, OffsetMap};
use super::CompactionConfig;
use crate::log::batch::BatchHeader;
use crate::log::records::split_stored;
use crate::log::segment::{file_stem, SegmentReader};
use crate::log::AbortedTxn;

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// A closed segment the plan covers, as it was when planned.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    pub base: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub reader: SegmentReader,
}

/// What one cleaning covers: the closed segments from the log start up to the
/// cleanable end (below the last stable offset, older than `min.compaction.lag.ms`),
/// of which those from `first_dirty` on were not cleaned yet.
#[derive(Debug, Clone)]
pub struct CleanPlan {
    pub dir: PathBuf,
    pub config: CompactionConfig,
    pub segments: Vec<SegmentPlan>,
    /// Index in `segments` of the first segment not cleaned yet.
    pub first_dirty: usize,
    /// Aborted transactions in the covered range.
    pub aborted: Vec<AbortedTxn>,
}

impl CleanPlan {
    pub fn dirty_bytes(&self) -> u64 {
        self.segments[self.first_dirty..]
            .iter()
            .map(|s| s.size)
            .sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Share of the cleanable bytes not cleaned yet (0 when there are none).
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.total_bytes();
        if total == 0 {
            return 0.0;
        }
        self.dirty_bytes() as f64 / total as f64
    }

    /// One past the last offset the plan covers.
    pub fn cleanable_end(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    /// Whether the log should be cleaned now: dirty enough, or holding dirty
    /// records older than `max.compaction.lag.ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        if self.first_dirty >= self.segments.len() || self.dirty_bytes() == 0 {
            return false;
        }
        let min = f64::from(self.config.min_cleanable_dirty_ratio_ppm) / 1e6;
        let overdue = self.segments[self.first_dirty]
            .max_timestamp
            .saturating_add(self.config.max_compaction_lag_ms)
            < now_ms;
        self.dirty_ratio() >= min || overdue
    }
}

/// A rewritten segment waiting to be swapped in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub base: i64,
    /// The planned segment's end and size: the swap happens only if it still has them.
    pub next_offset: i64,
    pub size_before: u64,
    pub size_after: u64,
    /// The `.cleaned` file.
    pub path: PathBuf,
}

/// Counters of one cleaning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub segments_rewritten: u64,
}

/// Limits the cleaner's I/O to a number of bytes per second (0: no limit), by
/// sleeping once it is ahead of the rate.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: u64,
    since: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        Throttle {
            bytes_per_second,
            since: Instant::now(),
            bytes: 0,
        }
    }

    pub fn consumed(&mut self, n: u64) {
        if self.bytes_per_second == 0 {
            return;
        }
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64);
        let elapsed = self.since.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        if elapsed > Duration::from_secs(10) {
            // A fresh window, so a long idle time earns no burst.
            self.since = Instant::now();
            self.bytes = 0;
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CleanError + '_ {
    move |source| CleanError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Calls `f` with every batch of a segment snapshot; returns the bytes read.
fn for_each_batch(
    reader: &SegmentReader,
    path: &Path,
    throttle: &mut Throttle,
    mut f: impl FnMut(BatchHeader, Bytes) -> Result<(), CleanError>,
) -> Result<u64, CleanError> {
    let mut pos = 0u64;
    while pos < reader.size() {
        let data = reader
            .read_batches(pos, 1 << 20, true)
            .map_err(io_err(path))?;
        if data.is_empty() {
            break;
        }
        throttle.consumed(data.len() as u64);
        for (h, one) in split_stored(&data) {
            f(h, one)?;
        }
        pos += data.len() as u64;
    }
    Ok(pos)
}

/// Path of the rewritten copy of the segment at `base`.
pub fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{}.log.cleaned", file_stem(base)))
}

/// Cleans the plan's segments: returns the rewritten ones (each fsynced under its
/// `.cleaned` name) and what it did. Segments that lose nothing are not rewritten.
/// On an error the `.cleaned` files written so far are removed.
pub fn clean(
    plan: &CleanPlan,
    now_ms: i64,
    throttle: &mut Throttle,
) -> Result<(Vec<Cleaned>, PassStats), CleanError> {
    let mut out = Vec::new();
    let result = clean_into(plan, now_ms, throttle, &mut out);
    if result.is_err() {
        for c in &out {
            let _ = fs::remove_file(&c.path);
        }
    }
    result.map(|stats| (out, stats))
}

fn clean_into(
    plan: &CleanPlan,
    now_ms: i64,
    throttle: &mut Throttle,
    out: &mut Vec<Cleaned>,
) -> Result<PassStats, CleanError> {
    let mut stats = PassStats::default();
    let dir = &plan.dir;
    // First read: the offset map of the dirty part, and each producer's last batch
    // in the covered range (kept, maybe empty, for the producer state).
    let mut map = OffsetMap::default();
    let mut last_batch: HashMap<i64, i64> = HashMap::new();
    for (i, seg) in plan.segments.iter().enumerate() {
        let dirty = i >= plan.first_dirty;
        stats.bytes_read += for_each_batch(&seg.reader, dir, throttle, |h, bytes| {
            if h.producer_id >= 0 {
                last_batch.insert(h.producer_id, h.base_offset);
            }
            if dirty {
                map.add_batch(&h, &bytes, &plan.aborted)?;
            }
            Ok(())
        })?;
    }
    let ctx = Context {
        map: &map,
        aborted: &plan.aborted,
        delete_horizon_ms: now_ms.saturating_sub(plan.config.delete_retention_ms),
    };
    // Second read: the rewrite, segment by segment.
    for seg in &plan.segments {
        let path = cleaned_path(dir, seg.base);
        let file = File::create(&path).map_err(io_err(&path))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut changed = false;
        let mut written = 0u64;
        let mut fstats = FilterStats::default();
        stats.bytes_read += for_each_batch(&seg.reader, dir, throttle, |h, bytes| {
            let retain =
                h.producer_id >= 0 && last_batch.get(&h.producer_id) == Some(&h.base_offset);
            let kept = match filter::filter_batch(&h, &bytes, &ctx, retain, &mut fstats)? {
                Decision::Keep => bytes,
                Decision::Drop => {
                    changed = true;
                    return Ok(());
                }
                Decision::Replace(b) => {
                    changed = true;
                    b
                }
            };
            w.write_all(&kept).map_err(io_err(&path))?;
            written += kept.len() as u64;
            Ok(())
        })?;
        if !changed {
            drop(w);
            fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        let file = w.into_inner().map_err(|e| CleanError::Io {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&path))?;
        throttle.consumed(written);
        stats.bytes_written += written;
        stats.records_removed += fstats.records_removed;
        stats.tombstones_removed += fstats.tombstones_removed;
        stats.segments_rewritten += 1;
        out.push(Cleaned {
            base: seg.base,
            next_offset: seg.next_offset,
            size_before: seg.size,
            size_after: written,
            path,
        });
    }
    Ok(stats)
}
