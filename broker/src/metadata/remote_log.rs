//! The remote log of one partition as the metadata quorum records it: which offset
//! ranges live in object storage, under which keys. It is part of the replicated
//! [`PartitionState`](super::cluster::PartitionState), so every broker — and any
//! future leader — knows exactly what is remote. Segments are contiguous and ordered;
//! an upload counts only once its entry is committed here, and only committed
//! segments may be deleted from local disk.
//!
//! Everything here is pure; the tier (`crate::tier`) does the I/O and proposes the
//! changes as quorum commands.

use serde::{Deserialize, Serialize};

/// One uploaded segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    pub base_offset: i64,
    /// Offset one past the last record.
    pub end_offset: i64,
    pub max_timestamp: i64,
    pub size_bytes: u64,
    /// Leader epoch that uploaded it.
    pub leader_epoch: i32,
    /// Object key of the `.log` data; `.index`, `.timeindex`, `.snapshot` and
    /// `.txnindex` share its stem.
    pub log_key: String,
}

impl RemoteSegment {
    pub fn index_key(&self) -> String {
        sibling(&self.log_key, "index")
    }
    pub fn time_index_key(&self) -> String {
        sibling(&self.log_key, "timeindex")
    }
    pub fn snapshot_key(&self) -> String {
        sibling(&self.log_key, "snapshot")
    }
    /// The aborted transactions with records in the segment (absent when none).
    pub fn txn_index_key(&self) -> String {
        sibling(&self.log_key, "txnindex")
    }
    /// Every object of the segment.
    pub fn keys(&self) -> [String; 5] {
        [
            self.log_key.clone(),
            self.index_key(),
            self.time_index_key(),
            self.snapshot_key(),
            self.txn_index_key(),
        ]
    }
}

fn sibling(log_key: &str, ext: &str) -> String {
    match log_key.strip_suffix(".log") {
        Some(stem) => format!("{stem}.{ext}"),
        None => format!("{log_key}.{ext}"),
    }
}

/// The committed remote segments of a partition, oldest first. (The serialized form
/// is also the format of the former per-partition `remote-manifest.json`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLog {
    segments: Vec<RemoteSegment>,
    /// End of the newest segment total retention removed: where the remote log
    /// continues even when retention emptied it, so nothing below is uploaded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expired_end: Option<i64>,
    /// Where DeleteRecords put the partition's log start, when that was inside the
    /// remote log: no remote record below it is served, by this leader or any later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_below: Option<i64>,
}

/// Why a remote log change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteLogError {
    #[error("segment [{base}, {end}) does not continue the remote log at {expected}")]
    Gap { base: i64, end: i64, expected: i64 },
    #[error("empty or inverted segment range [{0}, {1})")]
    BadRange(i64, i64),
}

impl RemoteLog {
    pub fn segments(&self) -> &[RemoteSegment] {
        &self.segments
    }

    /// Nothing was ever committed (no segment, and retention never removed one).
    pub fn is_pristine(&self) -> bool {
        self.segments.is_empty() && self.expired_end.is_none()
    }

    /// First offset in the tier, if anything is there.
    pub fn start_offset(&self) -> Option<i64> {
        self.segments.first().map(|s| s.base_offset)
    }

    /// One past the last uploaded offset (also after retention removed everything).
    pub fn end_offset(&self) -> Option<i64> {
        self.segments
            .last()
            .map(|s| s.end_offset)
            .or(self.expired_end)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    /// Appends an uploaded segment. Re-committing an entry exactly as it is committed
    /// is a no-op (`Ok(false)`); anything that would leave a gap or overlap is refused.
    pub fn commit(&mut self, seg: RemoteSegment) -> Result<bool, RemoteLogError> {
        if seg.end_offset <= seg.base_offset {
            return Err(RemoteLogError::BadRange(seg.base_offset, seg.end_offset));
        }
        if self.segments.contains(&seg) {
            return Ok(false);
        }
        if let Some(end) = self.end_offset() {
            if seg.base_offset != end {
                return Err(RemoteLogError::Gap {
                    base: seg.base_offset,
                    end: seg.end_offset,
                    expected: end,
                });
            }
        }
        self.segments.push(seg);
        Ok(true)
    }

    /// Drops the oldest segments that end at or before `through`; returns them so the
    /// caller can delete their objects. Idempotent.
    pub fn expire_through(&mut self, through: i64) -> Vec<RemoteSegment> {
        let n = self.segments.partition_point(|s| s.end_offset <= through);
        let removed: Vec<RemoteSegment> = self.segments.drain(..n).collect();
        if let Some(last) = removed.last() {
            self.expired_end = Some(last.end_offset);
        }
        removed
    }

    /// Where DeleteRecords put the log start within the remote log (0: never).
    pub fn deleted_below(&self) -> i64 {
        self.deleted_below.unwrap_or(0)
    }

    /// Records that no record below `offset` may be served (DeleteRecords); the
    /// segments wholly below it are for [`Self::expire_through`]. Returns whether
    /// anything changed (it only moves forward).
    pub fn delete_below(&mut self, offset: i64) -> bool {
        if offset <= self.deleted_below() {
            return false;
        }
        self.deleted_below = Some(offset);
        true
    }

    /// The segment holding `offset`.
    pub fn find(&self, offset: i64) -> Option<&RemoteSegment> {
        let i = self.segments.partition_point(|s| s.end_offset <= offset);
        self.segments.get(i).filter(|s| s.base_offset <= offset)
    }

    /// First segment whose newest record is at or after `ts`.
    pub fn find_by_timestamp(&self, ts: i64) -> Option<&RemoteSegment> {
        self.segments.iter().find(|s| s.max_timestamp >= ts)
    }

    /// Total retention (`retention.ms|bytes`, -1 = off) over the tier plus
    /// `local_bytes` not in it: the offset through which the oldest segments are
    /// beyond it, if any (what [`Self::expire_through`] then drops).
    pub fn expiry_point(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        local_bytes: u64,
    ) -> Option<i64> {
        let mut total = self.size_bytes() + local_bytes;
        let mut through = None;
        for s in &self.segments {
            let by_time = retention_ms >= 0 && now_ms - s.max_timestamp > retention_ms;
            let by_size = retention_bytes >= 0 && total - s.size_bytes >= retention_bytes as u64;
            if !(by_time || by_size) {
                break;
            }
            total -= s.size_bytes;
            through = Some(s.end_offset);
        }
        through
    }

    /// Checks that a whole log (one being adopted) is contiguous and well formed.
    pub fn validate(&self) -> Result<(), RemoteLogError> {
        let mut check = RemoteLog {
            segments: Vec::new(),
            expired_end: self.expired_end,
            deleted_below: self.deleted_below,
        };
        for s in &self.segments {
            if !check.commit(s.clone())? {
                return Err(RemoteLogError::BadRange(s.base_offset, s.end_offset));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn seg(base: i64, end: i64, ts: i64, size: u64) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            end_offset: end,
            max_timestamp: ts,
            size_bytes: size,
            leader_epoch: 0,
            log_key: format!("t/0/{base:020}-0.log"),
        }
    }

    #[test]
    fn commits_must_be_contiguous_and_are_idempotent() {
        let mut m = RemoteLog::default();
        assert!(m.is_pristine());
        assert!(m.commit(seg(0, 100, 10, 1000)).unwrap());
        assert!(
            !m.commit(seg(0, 100, 10, 1000)).unwrap(),
            "re-commit is a no-op"
        );
        assert!(matches!(
            m.commit(seg(150, 200, 20, 1000)),
            Err(RemoteLogError::Gap { expected: 100, .. })
        ));
        assert!(matches!(
            m.commit(seg(50, 120, 20, 1000)),
            Err(RemoteLogError::Gap { .. })
        ));
        // Same range, other content (another leader's upload): not a duplicate.
        let mut other = seg(0, 100, 10, 1000);
        other.leader_epoch = 3;
        assert!(m.commit(other).is_err());
        assert!(m.commit(seg(100, 200, 20, 1000)).unwrap());
        assert_eq!(m.find(150).unwrap().base_offset, 100);
        assert_eq!(m.find(99).unwrap().base_offset, 0);
        assert!(m.find(200).is_none());
        assert_eq!(m.find_by_timestamp(15).unwrap().base_offset, 100);
        assert_eq!(
            m.segments()[0].index_key(),
            "t/0/00000000000000000000-0.index"
        );
        assert!(m.validate().is_ok());
    }

    #[test]
    fn expiry_by_time_and_size_keeps_the_end() {
        let mut m = RemoteLog::default();
        for i in 0..5 {
            m.commit(seg(i * 100, (i + 1) * 100, i * 1000, 1000))
                .unwrap();
        }
        assert_eq!(m.expiry_point(3_500, 1_000, -1, 0), Some(300));
        let gone = m.expire_through(300);
        assert_eq!(
            gone.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
            vec![0, 100, 200]
        );
        assert!(m.expire_through(300).is_empty(), "idempotent");
        assert_eq!(m.expiry_point(3_500, -1, 1_000, 0), Some(400));
        assert_eq!(m.expiry_point(3_500, -1, 1_000, 5_000), Some(500));
        assert_eq!(m.expiry_point(3_500, -1, -1, 0), None);
        assert_eq!(m.expire_through(400).len(), 1);
        // Expiring everything keeps the end, so the next commit must continue it.
        let mut all = m.clone();
        assert_eq!(all.expire_through(i64::MAX).len(), 1);
        assert_eq!((all.start_offset(), all.end_offset()), (None, Some(500)));
        assert!(!all.is_pristine());
        assert!(all.commit(seg(400, 450, 0, 10)).is_err());
        assert!(all.commit(seg(500, 550, 0, 10)).unwrap());
        // The serialized form reads back (and reads the former manifest files).
        let raw = serde_json::to_vec(&all).unwrap();
        assert_eq!(serde_json::from_slice::<RemoteLog>(&raw).unwrap(), all);
        let legacy = r#"{"segments":[{"base_offset":0,"end_offset":10,"max_timestamp":1,
            "size_bytes":5,"leader_epoch":0,"log_key":"a/0/00000000000000000000.log"}]}"#;
        let old: RemoteLog = serde_json::from_str(legacy).unwrap();
        assert_eq!(old.end_offset(), Some(10));
    }
}
