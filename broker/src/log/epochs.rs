//! The leader-epoch checkpoint of a partition: for every leader epoch that wrote to
//! the log, the first offset it wrote. A follower that rejoins after a failover asks
//! the leader where its last epoch ends and truncates anything beyond, so a deposed
//! leader never keeps (or serves) a divergent tail.
//!
//! The file is rewritten (temporary file and rename) on every change, under the log
//! lock, but not fsynced there: the log's sync job fsyncs it after the lock is
//! released ([`super::SyncJob`]). The batches themselves carry their leader epoch, so
//! recovery after an unclean shutdown re-derives any entry of the active segment that
//! a power failure took from the file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const EPOCH_FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone)]
pub struct LeaderEpochCache {
    path: PathBuf,
    /// `(epoch, start_offset)`, both strictly increasing.
    entries: Vec<(i32, i64)>,
    /// Rewritten since the last fsync.
    dirty: bool,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir` (empty when there is none).
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(EPOCH_FILE);
        let mut entries = Vec::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    let mut parts = line.split_whitespace();
                    let (Some(e), Some(o)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    if let (Ok(e), Ok(o)) = (e.parse::<i32>(), o.parse::<i64>()) {
                        entries.push((e, o));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(LeaderEpochCache {
            path,
            entries,
            dirty: false,
        })
    }

    /// Rewrites the file in the page cache; [`LeaderEpochCache::take_dirty`] says
    /// when it needs an fsync.
    fn save(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for (e, o) in &self.entries {
            text.push_str(&format!("{e} {o}\n"));
        }
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        fs::rename(&tmp, &self.path)?;
        self.dirty = true;
        Ok(())
    }

    /// The file's path if it changed since the last call: the caller fsyncs it (and
    /// its directory, for the rename) without holding the log lock.
    pub fn take_dirty(&mut self) -> Option<PathBuf> {
        std::mem::take(&mut self.dirty).then(|| self.path.clone())
    }

    /// Whether the file changed since it was last handed out for an fsync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// fsyncs the file where the lock is already held anyway (clean shutdown).
    pub fn sync_now(&mut self) -> io::Result<()> {
        if let Some(path) = self.take_dirty() {
            sync_file_and_dir(&path)?;
        }
        Ok(())
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest epoch in the log, or -1.
    pub fn latest_epoch(&self) -> i32 {
        self.entries.last().map(|(e, _)| *e).unwrap_or(-1)
    }

    /// Records that `epoch` starts at `offset`; ignored unless it is newer than the
    /// latest epoch.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> io::Result<()> {
        if epoch < 0 || epoch <= self.latest_epoch() {
            return Ok(());
        }
        self.entries.push((epoch, offset));
        // Only what is on disk counts: an epoch kept in memory after a failed save
        // (a full disk) would let later appends of that epoch succeed without ever
        // checkpointing where it starts, so a restart would not know it.
        if let Err(e) = self.save() {
            self.entries.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|(_, o)| *o < offset);
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Where `epoch` ends in this log: `(the largest known epoch <= epoch, the start
    /// offset of the next epoch or the log end offset)`. For an epoch older than every
    /// epoch here, `(epoch, where the first one starts)`, as in Kafka: this log has
    /// nothing of it, so a follower must drop whatever it wrote in it past that point
    /// (a leader that crashed before replicating its first writes). `(-1, -1)` when
    /// the log knows no epoch at all.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let i = self.entries.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return match self.entries.first() {
                Some((_, start)) if epoch >= 0 => (epoch, *start),
                _ => (-1, -1),
            };
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map(|(_, o)| *o).unwrap_or(log_end);
        (found, end)
    }

    /// The first offset written in `epoch`, if it is known.
    pub fn start_of(&self, epoch: i32) -> Option<i64> {
        self.entries
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, o)| *o)
    }
}

/// fsyncs `path` and the directory holding it (so a rename into it is durable too).
pub fn sync_file_and_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::open(dir.path()).unwrap();
        assert_eq!(c.end_offset_for(0, 0), (-1, -1));
        c.assign(0, 0).unwrap();
        c.assign(2, 10).unwrap();
        c.assign(1, 5).unwrap(); // older than the latest: ignored
        c.assign(4, 20).unwrap();
        assert_eq!(c.latest_epoch(), 4);
        assert_eq!(c.end_offset_for(0, 30), (0, 10));
        assert_eq!(c.end_offset_for(1, 30), (0, 10));
        assert_eq!(c.end_offset_for(3, 30), (2, 20));
        assert_eq!(c.end_offset_for(4, 30), (4, 30));
        assert_eq!(c.end_offset_for(9, 30), (4, 30));
        let other = tempfile::tempdir().unwrap();
        let mut later = LeaderEpochCache::open(other.path()).unwrap();
        later.assign(3, 7).unwrap();
        // Older than anything here: it ends where this log's first epoch starts.
        assert_eq!(later.end_offset_for(1, 30), (1, 7));
        let reopened = LeaderEpochCache::open(dir.path()).unwrap();
        assert_eq!(reopened.entries(), c.entries());
        c.truncate_from(15).unwrap();
        assert_eq!(c.latest_epoch(), 2);
        assert_eq!(
            LeaderEpochCache::open(dir.path()).unwrap().latest_epoch(),
            2
        );
    }

    #[test]
    fn an_epoch_whose_checkpoint_failed_is_not_kept_and_is_saved_by_the_next_assign() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::open(dir.path()).unwrap();
        c.assign(1, 0).unwrap();
        // The checkpoint cannot be written (as on a full disk): a directory where
        // its temporary file goes.
        let tmp = dir.path().join(EPOCH_FILE).with_extension("tmp");
        fs::create_dir(&tmp).unwrap();
        assert!(c.assign(2, 10).is_err());
        assert_eq!(
            c.latest_epoch(),
            1,
            "an epoch that is not on disk is not known"
        );
        fs::remove_dir(&tmp).unwrap();
        // The next append of epoch 2 assigns it again, and this time it is saved.
        c.assign(2, 10).unwrap();
        assert_eq!(
            LeaderEpochCache::open(dir.path()).unwrap().entries(),
            &[(1, 0), (2, 10)]
        );
    }
}
