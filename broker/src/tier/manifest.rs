//! The remote manifest of one partition: which offset ranges live in object storage,
//! under which keys. Segments are kept contiguous and ordered; an upload is only
//! *committed* once its entry is in the manifest, and only committed segments may be
//! deleted locally.
//!
//! Interim storage (until the Raft metadata quorum carries it): a JSON file in the
//! partition directory, rewritten atomically, plus a copy uploaded next to the
//! segments so the tier is self-describing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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
    /// Object key of the `.log` data; `.index`, `.timeindex` and `.snapshot` share its stem.
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
}

fn sibling(log_key: &str, ext: &str) -> String {
    match log_key.strip_suffix(".log") {
        Some(stem) => format!("{stem}.{ext}"),
        None => format!("{log_key}.{ext}"),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteManifest {
    segments: Vec<RemoteSegment>,
    /// End of the newest segment total retention removed: where the remote log
    /// continues even when retention emptied it, so nothing below is uploaded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expired_end: Option<i64>,
}

/// Why a manifest change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("segment [{base}, {end}) does not continue the remote log at {expected}")]
    Gap { base: i64, end: i64, expected: i64 },
    #[error("empty or inverted segment range [{0}, {1})")]
    BadRange(i64, i64),
}

impl RemoteManifest {
    pub fn segments(&self) -> &[RemoteSegment] {
        &self.segments
    }

    /// First offset in the tier, if anything was uploaded.
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

    /// Commits an uploaded segment. Re-committing the same segment is a no-op
    /// (uploads are idempotent); anything that would leave a gap or overlap is refused.
    pub fn commit(&mut self, seg: RemoteSegment) -> Result<bool, ManifestError> {
        if seg.end_offset <= seg.base_offset {
            return Err(ManifestError::BadRange(seg.base_offset, seg.end_offset));
        }
        if self
            .segments
            .iter()
            .any(|s| s.base_offset == seg.base_offset && s.end_offset == seg.end_offset)
        {
            return Ok(false);
        }
        if let Some(end) = self.end_offset() {
            if seg.base_offset != end {
                return Err(ManifestError::Gap {
                    base: seg.base_offset,
                    end: seg.end_offset,
                    expected: end,
                });
            }
        }
        self.segments.push(seg);
        Ok(true)
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

    /// Removes the oldest segments for total retention; returns what was removed so
    /// the caller can delete the objects.
    pub fn expire(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        local_bytes: u64,
    ) -> Vec<RemoteSegment> {
        let mut removed = Vec::new();
        while let Some(first) = self.segments.first() {
            let total = self.size_bytes() + local_bytes;
            let by_time = retention_ms >= 0 && now_ms - first.max_timestamp > retention_ms;
            let by_size =
                retention_bytes >= 0 && total - first.size_bytes >= retention_bytes as u64;
            if !(by_time || by_size) {
                break;
            }
            let seg = self.segments.remove(0);
            self.expired_end = Some(seg.end_offset);
            removed.push(seg);
        }
        removed
    }

    pub fn load(path: &Path) -> io::Result<Self> {
        match fs::read(path) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let raw = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let tmp: PathBuf = path.with_extension("json.tmp");
        fs::write(&tmp, raw)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, end: i64, ts: i64, size: u64) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            end_offset: end,
            max_timestamp: ts,
            size_bytes: size,
            leader_epoch: 0,
            log_key: format!("t/0/{base:020}.log"),
        }
    }

    #[test]
    fn commits_must_be_contiguous_and_are_idempotent() {
        let mut m = RemoteManifest::default();
        assert!(m.commit(seg(0, 100, 10, 1000)).unwrap());
        assert!(
            !m.commit(seg(0, 100, 10, 1000)).unwrap(),
            "re-commit is a no-op"
        );
        assert!(matches!(
            m.commit(seg(150, 200, 20, 1000)),
            Err(ManifestError::Gap { expected: 100, .. })
        ));
        assert!(matches!(
            m.commit(seg(50, 120, 20, 1000)),
            Err(ManifestError::Gap { .. })
        ));
        assert!(m.commit(seg(100, 200, 20, 1000)).unwrap());
        assert_eq!(m.find(150).unwrap().base_offset, 100);
        assert_eq!(m.find(99).unwrap().base_offset, 0);
        assert!(m.find(200).is_none());
        assert_eq!(m.find_by_timestamp(15).unwrap().base_offset, 100);
        assert_eq!(
            m.segments()[0].index_key(),
            "t/0/00000000000000000000.index"
        );
    }

    #[test]
    fn expiry_by_time_and_size_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = RemoteManifest::default();
        for i in 0..5 {
            m.commit(seg(i * 100, (i + 1) * 100, i * 1000, 1000))
                .unwrap();
        }
        let gone = m.expire(3_500, 1_000, -1, 0);
        assert_eq!(
            gone.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
            vec![0, 100, 200]
        );
        let gone = m.expire(3_500, -1, 1_000, 0);
        assert_eq!(gone.len(), 1);
        // Expiring everything keeps the end, so the next commit must continue it.
        let mut all = m.clone();
        assert_eq!(all.expire(1_000_000, 1, -1, 0).len(), 1);
        assert_eq!((all.start_offset(), all.end_offset()), (None, Some(500)));
        assert!(all.commit(seg(400, 450, 0, 10)).is_err());
        assert!(all.commit(seg(500, 550, 0, 10)).unwrap());
        let p = dir.path().join("remote.json");
        m.save(&p).unwrap();
        assert_eq!(RemoteManifest::load(&p).unwrap(), m);
        assert_eq!(
            RemoteManifest::load(&dir.path().join("none.json")).unwrap(),
            RemoteManifest::default()
        );
    }
}
