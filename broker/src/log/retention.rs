//! Retention: which of a partition's oldest segments may be deleted from local disk.
//! Runs on the periodic retention task, under the partition lock (it only unlinks
//! files; readers holding a segment keep reading it through their open handle).
//!
//! Without a tier, `retention.ms` / `retention.bytes` delete segments for good. For a
//! topic with `remote.storage.enable`, local disk only holds the tail: a closed segment
//! goes once it is beyond `local.retention.ms|bytes` (or total retention) *and* its
//! upload is committed in the metadata quorum, so a segment the tier does not have yet
//! — during an object-store outage, say — is never deleted. Total retention of the
//! remote copy is the tier's job (`tier::service`).

use tracing::info;

use super::{io_err, LogError, PartitionLog};

/// How long tiered data stays on local disk; -2 means "the total retention value".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRetention {
    pub local_retention_ms: i64,
    pub local_retention_bytes: i64,
}

/// What retention needs to know about one closed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStat {
    pub size: u64,
    /// Newest record timestamp (or the creation time of a segment without any).
    pub newest_ts: i64,
    /// One past the segment's last offset.
    pub next_offset: i64,
}

/// The retention settings of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// Set for tiered topics.
    pub local: Option<LocalRetention>,
    /// End of the committed remote log (one past its last offset; -1: nothing is
    /// remote, or not known yet since the broker started).
    pub remote_end_offset: i64,
}

fn resolve(local: i64, total: i64) -> i64 {
    if local == -2 {
        total
    } else {
        local
    }
}

/// How many of the oldest `closed` segments (oldest first; the active segment is never
/// a candidate) to delete, given the partition's `total_size` on disk.
pub fn deletable(closed: &[SegmentStat], total_size: u64, now_ms: i64, p: &Policy) -> usize {
    let (limit_ms, limit_bytes) = match p.local {
        None => (p.retention_ms, p.retention_bytes),
        Some(l) => (
            resolve(l.local_retention_ms, p.retention_ms),
            resolve(l.local_retention_bytes, p.retention_bytes),
        ),
    };
    let beyond = |limit: i64, value: i64| limit >= 0 && value > limit;
    let mut size = total_size as i64;
    let mut n = 0;
    for s in closed {
        if p.local.is_some() && s.next_offset > p.remote_end_offset {
            // Not (yet) safely in the tier.
            break;
        }
        let age = now_ms - s.newest_ts;
        let by_time = beyond(limit_ms, age) || beyond(p.retention_ms, age);
        // Delete while what remains would still be at or above the limit (as Kafka).
        let remaining = size - s.size as i64;
        let by_size = (limit_bytes >= 0 && remaining >= limit_bytes)
            || (p.retention_bytes >= 0 && remaining >= p.retention_bytes);
        if !(by_time || by_size) {
            break;
        }
        size = remaining;
        n += 1;
    }
    n
}

impl PartitionLog {
    /// Tells the log how far the tier's committed copy reaches; tiered segments below
    /// it become eligible for local deletion.
    pub fn set_remote_end_offset(&mut self, end: i64) {
        self.remote_end_offset = self.remote_end_offset.max(end);
    }

    /// Deletes closed segments that retention (see the module docs) no longer keeps
    /// on local disk. Returns how many segments were removed.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let policy = Policy {
            retention_ms: self.config.retention_ms,
            retention_bytes: self.config.retention_bytes,
            local: self.config.remote,
            remote_end_offset: self.remote_end_offset,
        };
        let n = self.segments.len();
        let closed: Vec<SegmentStat> = self.segments[..n.saturating_sub(1)]
            .iter()
            .map(|s| SegmentStat {
                size: s.size(),
                newest_ts: if s.max_timestamp() >= 0 {
                    s.max_timestamp()
                } else {
                    s.created_at_ms()
                },
                next_offset: s.next_offset(),
            })
            .collect();
        let remove = deletable(&closed, self.size_bytes(), now_ms, &policy);
        for _ in 0..remove {
            let seg = self.segments.remove(0);
            info!(dir = %self.dir.display(), base = seg.base_offset(), next = seg.next_offset(),
                tiered = policy.local.is_some(), "retention deleted local segment");
            seg.delete().map_err(io_err(&self.dir))?;
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        if remove > 0 {
            self.remove_snapshots_below_start()?;
        }
        Ok(remove)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(n: i64) -> Vec<SegmentStat> {
        (0..n)
            .map(|i| SegmentStat {
                size: 100,
                newest_ts: i * 10,
                next_offset: (i + 1) * 10,
            })
            .collect()
    }

    fn plain(ms: i64, bytes: i64) -> Policy {
        Policy {
            retention_ms: ms,
            retention_bytes: bytes,
            local: None,
            remote_end_offset: -1,
        }
    }

    #[test]
    fn untiered_retention_by_time_and_size() {
        let s = segs(5);
        // Total 600 bytes (5 closed + 100 active).
        assert_eq!(deletable(&s, 600, 100, &plain(-1, -1)), 0);
        // Age > 75: segments with newest_ts 0 and 10 and 20.
        assert_eq!(deletable(&s, 600, 100, &plain(75, -1)), 3);
        // Keep at least 300 bytes: delete while the rest stays >= 300.
        assert_eq!(deletable(&s, 600, 100, &plain(-1, 300)), 3);
        assert_eq!(deletable(&s, 600, 100, &plain(-1, 10_000)), 0);
    }

    #[test]
    fn tiered_segments_go_only_after_upload_and_beyond_local_retention() {
        let s = segs(5);
        let tiered = |local_bytes: i64, remote_end: i64| Policy {
            retention_ms: -1,
            retention_bytes: -1,
            local: Some(LocalRetention {
                local_retention_ms: -2,
                local_retention_bytes: local_bytes,
            }),
            remote_end_offset: remote_end,
        };
        // Local retention says keep 200 bytes, but nothing is uploaded.
        assert_eq!(deletable(&s, 600, 100, &tiered(200, -1)), 0);
        // Two segments uploaded: only those two may go.
        assert_eq!(deletable(&s, 600, 100, &tiered(200, 20)), 2);
        // Everything uploaded: delete down to 200 bytes (4 of 5 closed segments).
        assert_eq!(deletable(&s, 600, 100, &tiered(200, 50)), 4);
        // Local retention unlimited (-2 resolves to the total, -1): nothing.
        assert_eq!(deletable(&s, 600, 100, &tiered(-2, 50)), 0);
        // Total retention applies locally too, but still only to uploaded segments.
        let mut p = tiered(-1, 10);
        p.retention_ms = 5;
        assert_eq!(deletable(&s, 600, 100, &p), 1);
    }
}
