//! The cleaner's side of the partition log, under the partition lock: planning a
//! cleaning, swapping rewritten segments in, and (on open) finishing or undoing a
//! swap a crash interrupted.

use std::fs;
use std::io;
use std::path::Path;

use tracing::{debug, info};

use super::pass::{CleanPlan, Cleaned, SegmentPlan};
use crate::log::epochs::sync_file_and_dir;
use crate::log::segment::{file_stem, Segment};
use crate::log::{io_err, LogError, PartitionLog};

/// Present in a partition directory once its log may have offset gaps (a cleaned
/// segment, or cleaned data replicated from a leader): recovery then accepts gaps
/// even if the topic is no longer compacted.
pub const GAPS_MARKER: &str = "compacted";

/// Where a swap stops in a crash test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SwapStep {
    /// The `.cleaned` file is renamed to `.swap` (the commit point).
    Renamed,
    /// The old indexes are removed.
    IndexesRemoved,
    /// The `.swap` file replaced the `.log`.
    Replaced,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Called when a log is opened, before its segments are listed: removes the
/// `.cleaned` files of an interrupted cleaning and completes its `.swap` files
/// (whose content is whole and fsynced).
pub fn recover_swaps(dir: &Path) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log.cleaned") {
            fs::remove_file(entry.path())?;
        } else if let Some(stem) = name.strip_suffix(".log.swap") {
            finish_swap(dir, stem)?;
            info!(dir = %dir.display(), segment = stem, "completed an interrupted segment swap");
        }
    }
    Ok(())
}

/// Leaves the [`GAPS_MARKER`] in `dir` (once).
pub fn note_gaps(dir: &Path) -> io::Result<()> {
    let marker = dir.join(GAPS_MARKER);
    if !marker.exists() {
        fs::write(&marker, b"")?;
        sync_file_and_dir(&marker)?;
    }
    Ok(())
}

fn finish_swap(dir: &Path, stem: &str) -> io::Result<()> {
    fs::write(dir.join(GAPS_MARKER), b"")?;
    remove_if_exists(&dir.join(format!("{stem}.index")))?;
    remove_if_exists(&dir.join(format!("{stem}.timeindex")))?;
    fs::rename(
        dir.join(format!("{stem}.log.swap")),
        dir.join(format!("{stem}.log")),
    )?;
    sync_dir(dir)
}

impl PartitionLog {
    /// Plans a cleaning given the high watermark and where the cleaner's last pass
    /// ended (`first_dirty`); `None` when the topic is not compacted or nothing is
    /// cleanable.
    pub fn cleaning_plan(
        &mut self,
        high_watermark: i64,
        first_dirty: i64,
        now_ms: i64,
    ) -> Option<CleanPlan> {
        let config = self.config.compaction?;
        let lso = self.last_stable_offset(high_watermark);
        let young_from = now_ms.saturating_sub(config.min_compaction_lag_ms);
        let n = self.segments.len();
        let segments: Vec<SegmentPlan> = self.segments[..n.saturating_sub(1)]
            .iter()
            .take_while(|s| s.next_offset() <= lso && s.max_timestamp() <= young_from)
            .map(|s| SegmentPlan {
                base: s.base_offset(),
                next_offset: s.next_offset(),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
                reader: s.reader(),
            })
            .collect();
        if segments.is_empty() {
            return None;
        }
        let first = segments
            .iter()
            .position(|s| s.next_offset > first_dirty)
            .unwrap_or(segments.len());
        let start = segments[0].base;
        let end = segments.last().map_or(start, |s| s.next_offset);
        Some(CleanPlan {
            dir: self.dir.clone(),
            config,
            aborted: self.txns.overlapping(start, end),
            segments,
            first_dirty: first,
        })
    }

    /// Swaps rewritten segments in for the ones they were made from, oldest first,
    /// and stops at the first whose segment changed since it was planned (deleted by
    /// retention or DeleteRecords): the order matters, since a newer segment may have
    /// lost a tombstone whose older value only the older segment's cleaning removes
    /// (a kill between two swaps leaves the same order). Returns how many were
    /// swapped.
    pub fn install_cleaned(
        &mut self,
        cleaned: Vec<Cleaned>,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        let mut swapped = 0;
        let mut stopped = false;
        for c in cleaned {
            if stopped {
                fs::remove_file(&c.path).map_err(io_err(&self.dir))?;
                continue;
            }
            let n = self.segments.len();
            let at = self.segments[..n - 1].iter().position(|s| {
                s.base_offset() == c.base
                    && s.next_offset() == c.next_offset
                    && s.size() == c.size_before
            });
            match at {
                Some(i) => {
                    self.swap_in(i, &c, now_ms, None)?;
                    swapped += 1;
                }
                None => {
                    debug!(dir = %self.dir.display(), base = c.base, "segment changed while cleaned; stopping");
                    stopped = true;
                    fs::remove_file(&c.path).map_err(io_err(&self.dir))?;
                }
            }
        }
        Ok(swapped)
    }

    /// Replaces segment `i` by its rewritten copy `c`. `stop_after` ends the swap
    /// early, as a crash would (tests).
    pub(crate) fn swap_in(
        &mut self,
        i: usize,
        c: &Cleaned,
        now_ms: i64,
        stop_after: Option<SwapStep>,
    ) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let stem = file_stem(c.base);
        note_gaps(&dir).map_err(io_err(&dir))?;
        if c.size_after == 0 && i > 0 {
            // Nothing left: the segment goes (an emptied first segment stays, as it
            // holds the log start offset).
            let seg = self.segments.remove(i);
            seg.delete().map_err(io_err(&dir))?;
            fs::remove_file(&c.path).map_err(io_err(&dir))?;
            return Ok(());
        }
        let swap = dir.join(format!("{stem}.log.swap"));
        fs::rename(&c.path, &swap).map_err(io_err(&dir))?;
        sync_dir(&dir).map_err(io_err(&dir))?;
        if stop_after == Some(SwapStep::Renamed) {
            return Ok(());
        }
        remove_if_exists(&dir.join(format!("{stem}.index"))).map_err(io_err(&dir))?;
        remove_if_exists(&dir.join(format!("{stem}.timeindex"))).map_err(io_err(&dir))?;
        if stop_after == Some(SwapStep::IndexesRemoved) {
            return Ok(());
        }
        fs::rename(&swap, dir.join(format!("{stem}.log"))).map_err(io_err(&dir))?;
        sync_dir(&dir).map_err(io_err(&dir))?;
        if stop_after == Some(SwapStep::Replaced) {
            return Ok(());
        }
        let (seg, _) = Segment::open_with_gaps(
            &dir,
            c.base,
            self.config.index_interval_bytes,
            true,
            now_ms,
            true,
        )
        .map_err(io_err(&dir))?;
        // Readers of the old segment keep its (now unlinked) file open.
        self.segments[i] = seg;
        Ok(())
    }
}
