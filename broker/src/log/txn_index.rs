//! The transactions a partition's log knows about beyond its batches: the aborted
//! transactions (what a `read_committed` Fetch lists so the client skips their
//! records) and the transactions whose marker is written but not yet replicated
//! (which still hold the last stable offset back: a consumer must not see a
//! transaction's records as committed, or skip them as aborted, before the marker
//! that decides it would survive a failover).
//!
//! The aborted list is kept in one file per partition (`aborted-transactions`),
//! rewritten under the log lock like the leader-epoch checkpoint and fsynced by the
//! log's sync job after the lock is released ([`super::SyncJob`]). Recovery replays
//! the batches after the newest producer snapshot and re-derives the entries of that
//! part of the log, so only aborts in older segments depend on the file; they were
//! fsynced right after they were written.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const ABORTED_FILE: &str = "aborted-transactions";

/// An aborted transaction of one producer on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
}

#[derive(Debug)]
pub struct TxnIndex {
    path: PathBuf,
    /// Ordered by `last_offset` (markers are appended in log order).
    aborted: Vec<AbortedTxn>,
    /// `(first offset, marker offset)` of transactions decided by a marker the high
    /// watermark has not passed yet, in log order.
    unreplicated: VecDeque<(i64, i64)>,
    dirty: bool,
}

impl TxnIndex {
    /// Loads the aborted list in `dir` (empty when there is none; a damaged line is
    /// skipped with the rest of the file kept).
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(ABORTED_FILE);
        let mut aborted = Vec::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    let mut it = line.split_whitespace().map(str::parse::<i64>);
                    if let (Some(Ok(producer_id)), Some(Ok(first_offset)), Some(Ok(last_offset))) =
                        (it.next(), it.next(), it.next())
                    {
                        aborted.push(AbortedTxn {
                            producer_id,
                            first_offset,
                            last_offset,
                        });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        aborted.sort_by_key(|a| a.last_offset);
        Ok(TxnIndex {
            path,
            aborted,
            unreplicated: VecDeque::new(),
            dirty: false,
        })
    }

    fn save(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::with_capacity(self.aborted.len() * 40);
        for a in &self.aborted {
            text.push_str(&format!(
                "{} {} {}\n",
                a.producer_id, a.first_offset, a.last_offset
            ));
        }
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        self.dirty = true;
        Ok(())
    }

    /// A marker at `marker_offset` decided the transaction that started at
    /// `first_offset`.
    pub fn decided(
        &mut self,
        producer_id: i64,
        first_offset: i64,
        marker_offset: i64,
        aborted: bool,
    ) -> io::Result<()> {
        self.unreplicated.push_back((first_offset, marker_offset));
        if aborted {
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: marker_offset,
            });
            self.save()?;
        }
        Ok(())
    }

    /// The oldest first offset of a transaction whose marker the high watermark has
    /// not passed; forgets the ones it has.
    pub fn first_unreplicated(&mut self, high_watermark: i64) -> Option<i64> {
        while self
            .unreplicated
            .front()
            .is_some_and(|(_, marker)| *marker < high_watermark)
        {
            self.unreplicated.pop_front();
        }
        self.unreplicated.iter().map(|(first, _)| *first).min()
    }

    /// Aborted transactions with records in `[from, to)`.
    pub fn overlapping(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    #[cfg(test)]
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Forgets what was decided at or after `offset` (a truncation, or a replay that
    /// re-derives it).
    pub fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        self.unreplicated.retain(|(_, marker)| *marker < offset);
        let keep = self.aborted.partition_point(|a| a.last_offset < offset);
        if keep < self.aborted.len() {
            self.aborted.truncate(keep);
            self.save()?;
        }
        Ok(())
    }

    /// Forgets aborted transactions that ended below `offset` (the log start).
    pub fn remove_below(&mut self, offset: i64) -> io::Result<()> {
        let drop = self.aborted.partition_point(|a| a.last_offset < offset);
        if drop > 0 {
            self.aborted.drain(..drop);
            self.save()?;
        }
        Ok(())
    }

    /// The file's path if it changed since the last call: the caller fsyncs it.
    pub fn take_dirty(&mut self) -> Option<PathBuf> {
        std::mem::take(&mut self.dirty).then(|| self.path.clone())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_transactions_persist_and_overlap_queries_find_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = TxnIndex::open(dir.path()).unwrap();
        ix.decided(1, 10, 20, true).unwrap();
        ix.decided(2, 15, 25, false).unwrap();
        ix.decided(3, 30, 40, true).unwrap();
        assert!(ix.take_dirty().is_some());
        assert!(ix.take_dirty().is_none());
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(ix.overlapping(0, 100)), vec![1, 3]);
        assert_eq!(pids(ix.overlapping(21, 100)), vec![3]);
        assert_eq!(pids(ix.overlapping(0, 10)), Vec::<i64>::new());
        assert_eq!(pids(ix.overlapping(0, 11)), vec![1]);
        // Until the high watermark passes a marker, its transaction is unstable.
        assert_eq!(ix.first_unreplicated(20), Some(10));
        assert_eq!(ix.first_unreplicated(21), Some(15));
        assert_eq!(ix.first_unreplicated(41), None);
        let reopened = TxnIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.aborted(), ix.aborted());
        ix.truncate_from(40).unwrap();
        assert_eq!(pids(ix.overlapping(0, 100)), vec![1]);
        ix.decided(3, 30, 41, true).unwrap();
        ix.remove_below(21).unwrap();
        assert_eq!(
            pids(TxnIndex::open(dir.path()).unwrap().overlapping(0, 100)),
            vec![3]
        );
    }
}
