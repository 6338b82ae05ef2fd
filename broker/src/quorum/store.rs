//! Durable storage of the metadata quorum: the Raft log (one JSON entry per line,
//! fsynced before openraft is told an append is done), the vote, the committed log
//! id, and the state machine with its snapshots.
//!
//! The metadata log is small (topic changes, ISR changes, heartbeats between
//! snapshots), so truncation and purging rewrite the log file from memory instead of
//! managing segments; openraft purges after every snapshot, which bounds the file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;

use super::{CommandResult, NodeId, TypeConfig};
use crate::metadata::cluster::ClusterState;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn json<T: Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(std::io::Error::other)
}

#[derive(Debug, Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
}

/// The Raft log, vote and committed id, under `<dir>/`.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Serialize, Deserialize)]
struct LogHeader {
    last_purged: Option<LogId<NodeId>>,
}

impl LogStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let header: Option<LogHeader> = read_json(&dir.join("log-header.json"))?;
        let mut inner = LogInner {
            last_purged: header.and_then(|h| h.last_purged),
            ..Default::default()
        };
        let path = dir.join("log.jsonl");
        if let Ok(f) = File::open(&path) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line?;
                match serde_json::from_str::<Entry<TypeConfig>>(&line) {
                    Ok(e) => {
                        let index = e.log_id.index;
                        // A later line for the same index replaces an earlier one
                        // (the file is rewritten on truncate, but be defensive).
                        inner.entries.split_off(&index);
                        inner.entries.insert(index, e);
                    }
                    Err(err) => {
                        // Only a torn final line is expected (crash mid-append, before
                        // the append was acknowledged); stop there.
                        warn!(line = n + 1, error = %err, "ignoring unreadable raft log tail");
                        break;
                    }
                }
            }
        }
        if let Some(p) = inner.last_purged {
            inner.entries = inner.entries.split_off(&(p.index + 1));
        }
        let store = LogStore {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
        };
        store.rewrite()?;
        Ok(store)
    }

    /// Rewrites the log file from memory (after truncate/purge, and at open to drop a
    /// torn tail).
    fn rewrite(&self) -> std::io::Result<()> {
        let inner = self.inner.lock();
        let mut buf = Vec::new();
        for e in inner.entries.values() {
            buf.extend_from_slice(&json(e)?);
            buf.push(b'\n');
        }
        write_atomic(
            &self.dir.join("log-header.json"),
            &json(&LogHeader {
                last_purged: inner.last_purged,
            })?,
        )?;
        write_atomic(&self.dir.join("log.jsonl"), &buf)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        json(vote)
            .and_then(|b| write_atomic(&self.dir.join("vote.json"), &b))
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        read_json(&self.dir.join("vote.json"))
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        json(&committed)
            .and_then(|b| write_atomic(&self.dir.join("committed.json"), &b))
            .map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(
            read_json::<Option<LogId<NodeId>>>(&self.dir.join("committed.json"))
                .map_err(|e| StorageIOError::read(AnyError::new(&e)))?
                .flatten(),
        )
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let result = (|| -> std::io::Result<()> {
            let mut buf = Vec::new();
            for e in &entries {
                buf.extend_from_slice(&json(e)?);
                buf.push(b'\n');
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("log.jsonl"))?;
            f.write_all(&buf)?;
            f.sync_data()
        })();
        if result.is_ok() {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        let err = result
            .as_ref()
            .err()
            .map(|e| StorageIOError::write_logs(AnyError::new(e)));
        callback.log_io_completed(result);
        match err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.inner.lock().entries.split_off(&log_id.index);
        self.rewrite()
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        {
            let mut inner = self.inner.lock();
            let keep = inner.entries.split_off(&(log_id.index + 1));
            inner.entries = keep;
            inner.last_purged = Some(log_id);
        }
        self.rewrite()
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    state: ClusterState,
}

#[derive(Debug, Default)]
struct MachineInner {
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    snapshot_seq: u64,
}

/// The state machine: the [`ClusterState`] every broker serves metadata from,
/// published on a watch channel after every applied batch of entries.
#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    inner: Arc<Mutex<MachineInner>>,
    publish: Arc<watch::Sender<Published>>,
}

/// The state as seen by the rest of the broker.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub state: Arc<ClusterState>,
    /// Index of the last applied log entry (0 before any).
    pub applied_index: u64,
    pub membership: Vec<(NodeId, String, bool)>,
}

impl StateMachine {
    pub fn open(dir: &Path) -> std::io::Result<(Self, watch::Receiver<Published>)> {
        fs::create_dir_all(dir)?;
        let mut inner = MachineInner::default();
        if let Some(s) = read_json::<StoredSnapshot>(&dir.join("snapshot.json"))? {
            inner.state = s.state;
            inner.last_applied = s.meta.last_log_id;
            inner.membership = s.meta.last_membership;
        }
        let (tx, rx) = watch::channel(Published::default());
        let sm = StateMachine {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            publish: Arc::new(tx),
        };
        sm.publish_now();
        Ok((sm, rx))
    }

    fn publish_now(&self) {
        let inner = self.inner.lock();
        let voters: Vec<NodeId> = inner.membership.membership().voter_ids().collect();
        let membership = inner
            .membership
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect();
        self.publish.send_replace(Published {
            state: Arc::new(inner.state.clone()),
            applied_index: inner.last_applied.map(|l| l.index).unwrap_or(0),
            membership,
        });
    }

    fn snapshot_of(inner: &MachineInner) -> StoredSnapshot {
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    inner.last_applied.map(|l| l.index).unwrap_or(0),
                    inner.snapshot_seq
                ),
            },
            state: inner.state.clone(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let snap = {
            let mut inner = self.inner.lock();
            inner.snapshot_seq += 1;
            Self::snapshot_of(&inner)
        };
        let raw =
            json(&snap).map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        write_atomic(&self.dir.join("snapshot.json"), &raw)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Snapshot {
            meta: snap.meta,
            snapshot: Box::new(Cursor::new(raw)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(CommandResult::ok()),
                    EntryPayload::Normal(cmd) => {
                        out.push(CommandResult::from(inner.state.apply(cmd)));
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(CommandResult::ok());
                    }
                }
            }
        }
        self.publish_now();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let raw = snapshot.into_inner();
        let stored: StoredSnapshot = serde_json::from_slice(&raw).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        write_atomic(&self.dir.join("snapshot.json"), &raw).map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        {
            let mut inner = self.inner.lock();
            inner.state = stored.state;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
        }
        self.publish_now();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let path = self.dir.join("snapshot.json");
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, AnyError::new(&e)).into()),
        };
        let stored: StoredSnapshot = serde_json::from_slice(&raw)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(raw)),
        }))
    }
}
