//! Removal of the files of replicas this broker no longer hosts (their topic was
//! deleted, or the replica was moved to another broker).
//!
//! The reconcile ([`crate::broker::Broker::reconcile`]) is the one place that
//! removes replicas. For each it first moves the partition directory aside under a
//! name ending in `-delete` ([`move_aside`]), at once and cheaply, so the
//! partition's own name is free for a topic re-created under the same name. It then
//! hands everything one metadata change removed to [`remove`], which deletes each
//! moved-aside directory exactly once, on a blocking thread, and logs once per
//! partition. A directory that a crash left behind is deleted at the next start
//! ([`sweep`]), before any replica opens.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};
use uuid::Uuid;

/// The suffix of a moved-aside partition directory.
const DELETE_SUFFIX: &str = "-delete";

/// A replica whose directory has been moved aside and is waiting to be deleted.
#[derive(Debug)]
pub struct RemovedReplica {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The moved-aside directory; `None` when there was no directory to move.
    dir: Option<PathBuf>,
}

/// Moves `dir` (the directory of `topic`-`partition`, a partition of the topic
/// with id `topic_id`) aside under `data_dir`, ready for [`remove`]. A directory
/// that is already gone needs no removal and is not an error.
pub fn move_aside(
    data_dir: &Path,
    dir: &Path,
    topic: &Arc<str>,
    partition: i32,
    topic_id: &Uuid,
) -> RemovedReplica {
    let doomed = data_dir.join(format!(
        "{topic}-{partition}.{}{DELETE_SUFFIX}",
        topic_id.simple()
    ));
    let dir = match fs::rename(dir, &doomed) {
        Ok(()) => Some(doomed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "could not move a removed replica aside");
            None
        }
    };
    RemovedReplica {
        topic: Arc::clone(topic),
        partition,
        dir,
    }
}

/// Deletes the moved-aside directory of each removed replica, once each. Blocking:
/// call it off the async runtime.
pub fn remove(removed: &[RemovedReplica]) {
    for r in removed {
        if let Some(dir) = &r.dir {
            if let Err(e) = remove_dir(dir) {
                warn!(topic = %r.topic, partition = r.partition, dir = %dir.display(), error = %e, "could not remove deleted partition");
                continue;
            }
        }
        info!(topic = %r.topic, partition = r.partition, "removed local replica");
    }
}

/// Deletes every moved-aside directory under `data_dir`: those a previous run
/// did not get to delete before it stopped. Blocking; called once at startup.
pub fn sweep(data_dir: &Path) {
    let entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) => {
            warn!(dir = %data_dir.display(), error = %e, "cannot list the data directory for removed replicas");
            return;
        }
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().ends_with(DELETE_SUFFIX) {
            continue;
        }
        let dir = e.path();
        match remove_dir(&dir) {
            Ok(()) => {
                info!(dir = %dir.display(), "removed the files of a replica removed before the restart")
            }
            Err(err) => {
                warn!(dir = %dir.display(), error = %err, "could not remove deleted partition")
            }
        }
    }
}

/// `remove_dir_all`, for which a directory that is already gone is done, not failed.
fn remove_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
        let dir = data_dir.join(format!("{topic}-{partition}"));
        fs::create_dir_all(&dir).expect("create partition dir");
        fs::write(dir.join("00000000000000000000.log"), b"batch").expect("write segment");
        dir
    }

    fn names(data_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(data_dir)
            .expect("read data dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn removed_partitions_are_moved_aside_then_deleted_once_each() {
        let data = tempfile::tempdir().expect("tempdir");
        let topic: Arc<str> = Arc::from("orders");
        let id = Uuid::new_v4();
        fs::create_dir_all(data.path().join("keep-0")).expect("other partition");
        let removed: Vec<RemovedReplica> = (0..64)
            .map(|p| {
                let dir = partition_dir(data.path(), &topic, p);
                move_aside(data.path(), &dir, &topic, p, &id)
            })
            .collect();
        // Moved aside at once: the partitions' own names are free again.
        assert_eq!(names(data.path()).len(), 65);
        assert!(!data.path().join("orders-0").exists());
        assert!(removed.iter().all(|r| r.dir.is_some()));

        remove(&removed);
        assert_eq!(names(data.path()), vec!["keep-0".to_string()]);
        // A second removal of the same (now missing) directories is no failure.
        remove(&removed);
    }

    #[test]
    fn a_missing_partition_directory_needs_no_removal() {
        let data = tempfile::tempdir().expect("tempdir");
        let topic: Arc<str> = Arc::from("gone");
        let r = move_aside(
            data.path(),
            &data.path().join("gone-3"),
            &topic,
            3,
            &Uuid::new_v4(),
        );
        assert!(r.dir.is_none());
        remove(&[r]);
        assert!(names(data.path()).is_empty());
    }

    #[test]
    fn the_startup_sweep_deletes_only_moved_aside_directories() {
        let data = tempfile::tempdir().expect("tempdir");
        let topic: Arc<str> = Arc::from("t");
        let id = Uuid::new_v4();
        for p in 0..3 {
            let dir = partition_dir(data.path(), &topic, p);
            move_aside(data.path(), &dir, &topic, p, &id);
        }
        partition_dir(data.path(), "live", 0);
        fs::write(data.path().join("topic-id"), b"not a directory").expect("write");
        sweep(data.path());
        assert_eq!(
            names(data.path()),
            vec!["live-0".to_string(), "topic-id".to_string()]
        );
    }

    #[test]
    fn an_already_missing_directory_is_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        assert!(remove_dir(&data.path().join("never-existed-delete")).is_ok());
    }
}
