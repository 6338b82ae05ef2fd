//! A partition replica hosted by this broker: its log plus the signal that wakes
//! long-polling fetchers when new data is appended.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::log::{
    AppendInfo, ClosedSegment, LogConfig, LogError, PartitionLog, ReadPlan, ValidatedRecords,
};

#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// High watermark (single node: the log end offset), published after each append.
    high_watermark: watch::Sender<i64>,
    leader_epoch: i32,
}

/// What a fetch gets back from one partition.
#[derive(Debug)]
pub struct FetchSnapshot {
    pub plan: ReadPlan,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, log: PartitionLog) -> Self {
        let (tx, _) = watch::channel(log.log_end_offset());
        Partition {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark: tx,
            leader_epoch: 0,
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.lock().log_start_offset()
    }

    pub fn log_config(&self) -> LogConfig {
        self.log.lock().config().clone()
    }

    pub fn set_log_config(&self, c: LogConfig) {
        self.log.lock().set_config(c);
    }

    /// Appends records; blocking file I/O happens under a lock that is never held
    /// across an await.
    pub fn append(&self, records: ValidatedRecords, now_ms: i64) -> Result<AppendInfo, LogError> {
        let info = {
            let mut log = self.log.lock();
            log.append(records, self.leader_epoch, now_ms)?
        };
        self.high_watermark.send_replace(info.last_offset + 1);
        Ok(info)
    }

    /// Plans a read of committed data starting at `offset`.
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<FetchSnapshot, LogError> {
        let log = self.log.lock();
        let plan = log.plan_read(offset, max_bytes, min_one)?;
        Ok(FetchSnapshot {
            plan,
            high_watermark: log.log_end_offset(),
            log_start_offset: log.log_start_offset(),
        })
    }

    /// Subscribes to high watermark changes (for long-poll fetches).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().offset_for_timestamp(ts)
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().max_timestamp_offset()
    }

    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.log.lock().apply_retention(now_ms)
    }

    /// How far the tier's committed copy reaches (bounds local deletion).
    pub fn set_remote_end_offset(&self, end: i64) {
        self.log.lock().set_remote_end_offset(end)
    }

    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        self.log.lock().flush_if_due(now_ms)
    }

    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        self.log.lock().closed_segments()
    }

    pub fn dir(&self) -> std::path::PathBuf {
        self.log.lock().dir().to_path_buf()
    }

    pub fn segment_count(&self) -> usize {
        self.log.lock().segment_count()
    }

    /// Rolls, appends `records` (if any) as the new start of the live data, and deletes
    /// every segment before them. Returns how many segments were removed.
    pub fn checkpoint(
        &self,
        records: Option<ValidatedRecords>,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        let (removed, leo) = {
            let mut log = self.log.lock();
            let removed = log.checkpoint(records, self.leader_epoch, now_ms)?;
            (removed, log.log_end_offset())
        };
        self.high_watermark.send_replace(leo);
        Ok(removed)
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().size_bytes()
    }

    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.log.lock().close(now_ms)
    }
}
