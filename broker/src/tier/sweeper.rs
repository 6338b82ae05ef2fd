//! Orphaned objects: what lies under a partition's prefix in the object store but
//! is not part of its committed remote log. An upload whose quorum commit was
//! refused (the uploader lost its leadership in between) or never happened (the
//! broker died after the PUT), and an expired segment whose DELETE failed, each
//! leave such objects behind; nothing would ever read or delete them.
//!
//! The partition leader lists its prefix now and then and deletes the segment
//! objects the committed log does not name, but only those older than a grace
//! period: an upload in flight (its objects are written before its commit) must
//! never be mistaken for an orphan. The list is taken *before* the committed state
//! is read, so any object committed by then is found in that state.

use std::collections::HashSet;

use crate::metadata::remote_log::RemoteLog;

/// An object under a partition prefix, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub last_modified_ms: i64,
}

/// Whether `key` names one of the objects of an uploaded segment
/// (`<base:020>-<epoch>.{log,index,timeindex,snapshot}`); anything else under the
/// prefix (the published manifest copy, foreign files) is never swept.
pub fn is_segment_object(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !matches!(ext, "log" | "index" | "timeindex" | "snapshot") {
        return false;
    }
    let Some((base, epoch)) = stem.split_once('-') else {
        return false;
    };
    base.len() == 20
        && base.bytes().all(|b| b.is_ascii_digit())
        && !epoch.is_empty()
        && epoch.bytes().all(|b| b.is_ascii_digit())
}

/// The keys of `listed` to delete: segment objects that `committed` does not
/// reference and that were last written at least `grace_ms` before `now_ms`.
pub fn orphans(
    listed: &[Listed],
    committed: &RemoteLog,
    now_ms: i64,
    grace_ms: i64,
) -> Vec<String> {
    let referenced: HashSet<String> = committed.segments().iter().flat_map(|s| s.keys()).collect();
    listed
        .iter()
        .filter(|o| is_segment_object(&o.key))
        .filter(|o| !referenced.contains(&o.key))
        .filter(|o| now_ms.saturating_sub(o.last_modified_ms) >= grace_ms)
        .map(|o| o.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::remote_log::RemoteSegment;

    const P: &str = "orders-0123/0";

    fn committed() -> RemoteLog {
        let mut log = RemoteLog::default();
        for (base, end) in [(0, 100), (100, 200)] {
            log.commit(RemoteSegment {
                base_offset: base,
                end_offset: end,
                max_timestamp: 0,
                size_bytes: 10,
                leader_epoch: 1,
                log_key: format!("{P}/{base:020}-1.log"),
            })
            .unwrap();
        }
        log
    }

    fn listed(name: &str, last_modified_ms: i64) -> Listed {
        Listed {
            key: format!("{P}/{name}"),
            last_modified_ms,
        }
    }

    #[test]
    fn only_old_unreferenced_segment_objects_are_orphans() {
        let now = 10_000_000;
        let old = now - 3_600_000;
        let objects = vec![
            // Committed: kept whatever their age.
            listed("00000000000000000000-1.log", old),
            listed("00000000000000000000-1.index", old),
            listed("00000000000000000100-1.snapshot", old),
            // A refused commit of epoch 0 at the same base, and an upload past the end.
            listed("00000000000000000100-0.log", old),
            listed("00000000000000000100-0.timeindex", old),
            listed("00000000000000000200-2.log", old),
            // In flight: written a minute ago.
            listed("00000000000000000200-3.log", now - 60_000),
            // Not segment objects.
            listed("remote-manifest.json", old),
            listed("notes.txt", old),
        ];
        let mut got = orphans(&objects, &committed(), now, 1_800_000);
        got.sort();
        assert_eq!(
            got,
            vec![
                format!("{P}/00000000000000000100-0.log"),
                format!("{P}/00000000000000000100-0.timeindex"),
                format!("{P}/00000000000000000200-2.log"),
            ]
        );
    }

    #[test]
    fn segment_object_names() {
        assert!(is_segment_object("t-1/0/00000000000000000042-7.log"));
        assert!(is_segment_object("00000000000000000042-7.timeindex"));
        assert!(!is_segment_object("t-1/0/00000000000000000042-7.json"));
        assert!(!is_segment_object("t-1/0/42-7.log"));
        assert!(!is_segment_object("t-1/0/00000000000000000042.log"));
        assert!(!is_segment_object("t-1/0/00000000000000000042-x.log"));
        assert!(!is_segment_object("t-1/0/remote-manifest.json"));
    }
}
