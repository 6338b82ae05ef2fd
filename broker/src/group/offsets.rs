//! Committed offsets: an in-memory cache backed by records in the internal
//! `__consumer_offsets` topic. A commit appends one record per partition (key: group,
//! topic, partition; value: offset, leader epoch, metadata, commit time; a null value
//! deletes) to the offsets partition that owns the group; the cache shows it only once
//! the high watermark has passed it, so nothing a failover could lose is ever served.
//! A broker that becomes leader of an offsets partition replays it ([`replay`]) into
//! a fresh cache, then installs that.
//!
//! `__consumer_offsets` is a compacted topic: the log cleaner (`log::cleaner`) keeps
//! the latest record per key and drops old tombstones, so the topic stays
//! proportional to the live state.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::{batch, records};
use crate::partition::Partition;

/// Name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    #[serde(rename = "o")]
    pub offset: i64,
    #[serde(rename = "e")]
    pub leader_epoch: i32,
    #[serde(rename = "m")]
    pub metadata: Option<String>,
    #[serde(rename = "ts")]
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OffsetKey {
    #[serde(rename = "g")]
    group: String,
    #[serde(rename = "t")]
    topic: String,
    #[serde(rename = "p")]
    partition: i32,
}

/// A change to the committed state: `None` deletes.
pub type OffsetChange = (String, String, i32, Option<CommittedOffset>);

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`, so the owner of a group is
/// the same partition a Kafka cluster would pick.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Encodes changes as one uncompressed record batch; `txn` makes it part of that
/// producer's transaction (TxnOffsetCommit), applied only once its commit marker is
/// written.
pub fn encode_changes(
    changes: &[OffsetChange],
    now_ms: i64,
    txn: Option<(i64, i16)>,
) -> anyhow::Result<Bytes> {
    let records = changes
        .iter()
        .map(|(group, topic, partition, value)| {
            let key = serde_json::to_vec(&OffsetKey {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
            })?;
            let value = value.as_ref().map(serde_json::to_vec).transpose()?;
            Ok((Bytes::from(key), value.map(Bytes::from)))
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    records::encode_key_values(records, now_ms, txn)
}

/// Decodes the offset changes of one stored batch.
fn decode_batch(h: &batch::BatchHeader, one: &Bytes) -> Vec<OffsetChange> {
    let Some(kvs) = records::decode_key_values(one) else {
        tracing::warn!(
            offset = h.base_offset,
            "skipping undecodable batch in __consumer_offsets"
        );
        return Vec::new();
    };
    kvs.into_iter()
        .filter_map(|(k, v)| {
            let key = serde_json::from_slice::<OffsetKey>(&k).ok()?;
            let value = v.and_then(|v| serde_json::from_slice::<CommittedOffset>(&v).ok());
            Some((key.group, key.topic, key.partition, value))
        })
        .collect()
}

/// Decodes the offset changes in a run of stored batches (whole batches only),
/// transactional ones included, markers skipped.
pub fn decode_changes(data: &Bytes) -> Vec<OffsetChange> {
    records::split_stored(data)
        .filter(|(h, _)| !h.is_control())
        .flat_map(|(h, one)| decode_batch(&h, &one))
        .collect()
}

/// Offset commits of transactions whose marker is not written yet, by producer id.
pub type PendingTxnOffsets = HashMap<i64, Vec<OffsetChange>>;

/// Replays one offsets partition, from its log start to its end, into a fresh cache;
/// `on_batch` runs after each read. Transactional commits are held per producer
/// until their marker: a commit marker applies them, an abort drops them, and those
/// still open are returned. Takes no coordinator lock: a coordinator calls it before
/// installing the result, so a long replay stalls nobody else's groups. Returns the
/// cache, the open transactional commits and how many records it replayed.
pub fn replay(
    p: &Partition,
    on_batch: &dyn Fn(),
) -> anyhow::Result<(OffsetCache, PendingTxnOffsets, usize)> {
    let mut cache = OffsetCache::default();
    let mut open = PendingTxnOffsets::new();
    let mut records = 0usize;
    p.replay_local(
        |h, one| {
            if h.is_control() {
                let committed =
                    batch::control_record(&one).is_some_and(|c| c.marker == batch::Marker::Commit);
                if let Some(changes) = open.remove(&h.producer_id) {
                    if committed {
                        cache.apply(changes);
                    }
                }
                return;
            }
            let changes = decode_batch(&h, &one);
            records += changes.len();
            if h.is_transactional() {
                open.entry(h.producer_id).or_default().extend(changes);
            } else {
                cache.apply(changes);
            }
        },
        on_batch,
    )?;
    Ok((cache, open, records))
}

/// The cache: group → (topic, partition) → committed offset.
#[derive(Debug, Default)]
pub struct OffsetCache {
    groups: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>,
}

impl OffsetCache {
    pub fn apply(&mut self, changes: impl IntoIterator<Item = OffsetChange>) {
        for (g, t, p, v) in changes {
            match v {
                Some(v) => {
                    self.groups.entry(g).or_default().insert((t, p), v);
                }
                None => {
                    if let Some(m) = self.groups.get_mut(&g) {
                        m.remove(&(t, p));
                        if m.is_empty() {
                            self.groups.remove(&g);
                        }
                    }
                }
            }
        }
    }

    /// Adds the groups of a replayed partition (whose groups this cache must not hold).
    pub fn install(&mut self, loaded: OffsetCache) {
        self.groups.extend(loaded.groups);
    }

    /// Forgets every group whose offsets live in `partition` (coordination moved away).
    pub fn drop_partition(&mut self, partition: i32, partitions: i32) {
        self.groups
            .retain(|g, _| partition_for(g, partitions) != partition);
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    pub fn group(&self, group: &str) -> Option<&BTreeMap<(String, i32), CommittedOffset>> {
        self.groups.get(group)
    }

    pub fn group_ids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// Live entries of every group owned by offsets partition `partition`.
    pub fn entries_for_partition(&self, partition: i32, partitions: i32) -> Vec<OffsetChange> {
        let mut out = Vec::new();
        for (g, m) in &self.groups {
            if partition_for(g, partitions) == partition {
                for ((t, p), v) in m {
                    out.push((g.clone(), t.clone(), *p, Some(v.clone())));
                }
            }
        }
        out
    }

    /// Entries committed before `cutoff` for groups `expire_group` says may expire.
    pub fn expired(&self, cutoff: i64, expire_group: impl Fn(&str) -> bool) -> Vec<OffsetChange> {
        let mut out = Vec::new();
        for (g, m) in &self.groups {
            if !expire_group(g) {
                continue;
            }
            for ((t, p), v) in m {
                if v.commit_timestamp < cutoff {
                    out.push((g.clone(), t.clone(), *p, None));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_matches_java_string_hash() {
        // "test-group".hashCode() == 627841412 in Java; abs % 50 == 12.
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        assert!((0..50).contains(&partition_for("ünïcode-group", 50)));
    }

    #[test]
    fn changes_round_trip_through_a_record_batch() {
        let v = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("meta".into()),
            commit_timestamp: 1000,
        };
        let changes = vec![
            ("g".to_string(), "t".to_string(), 0, Some(v.clone())),
            ("g".to_string(), "t".to_string(), 1, None),
        ];
        let b = encode_changes(&changes, 5, None).unwrap();
        assert!(batch::validate(&b).is_ok());
        assert_eq!(decode_changes(&b), changes);
        let mut cache = OffsetCache::default();
        cache.apply(decode_changes(&b));
        assert_eq!(cache.get("g", "t", 0), Some(&v));
        assert!(cache.get("g", "t", 1).is_none());
        cache.apply(vec![("g".into(), "t".into(), 0, None)]);
        assert!(cache.group("g").is_none());
    }

    #[test]
    fn expiry_only_touches_groups_allowed_to_expire() {
        let mut cache = OffsetCache::default();
        let old = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp: 10,
        };
        cache.apply(vec![
            ("a".into(), "t".into(), 0, Some(old.clone())),
            ("b".into(), "t".into(), 0, Some(old)),
        ]);
        let gone = cache.expired(100, |g| g == "a");
        assert_eq!(gone, vec![("a".to_string(), "t".to_string(), 0, None)]);
    }
}
