//! Cluster metadata. In this single-node phase the metadata is a topic catalog kept
//! in `<data_dir>/meta/topics.json` and rewritten atomically on every change; the
//! Raft quorum of the clustered broker replaces the storage, not the interface.

pub mod cluster;
pub mod topic_config;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// A topic as recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    #[serde(default)]
    pub internal: bool,
}

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("metadata storage error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata quorum unavailable: {0}")]
    Quorum(String),
    #[error("corrupt metadata file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Upper bound on partitions per topic, to keep a typo from creating millions of
/// directories.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Kafka's topic name rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let bad = |why: &str| Err(MetadataError::InvalidTopicName(format!("`{name}` {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 249 {
        return bad("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("may only contain ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The durable topic catalog.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    topics: BTreeMap<String, TopicRecord>,
}

impl Catalog {
    pub fn open(data_dir: &Path) -> Result<Self, MetadataError> {
        let dir = data_dir.join("meta");
        fs::create_dir_all(&dir).map_err(|source| MetadataError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("topics.json");
        let topics = match fs::read(&path) {
            Ok(raw) => {
                let list: Vec<TopicRecord> =
                    serde_json::from_slice(&raw).map_err(|e| MetadataError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                list.into_iter().map(|t| (t.name.clone(), t)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        Ok(Catalog { path, topics })
    }

    fn save(&self) -> Result<(), MetadataError> {
        let io = |source| MetadataError::Io {
            path: self.path.clone(),
            source,
        };
        let list: Vec<&TopicRecord> = self.topics.values().collect();
        let raw = serde_json::to_vec_pretty(&list).map_err(|e| MetadataError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&raw).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.topics.values()
    }

    pub fn get(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    /// Validates a new topic; with `commit` it is also recorded.
    pub fn create_topic(
        &mut self,
        record: TopicRecord,
        commit: bool,
    ) -> Result<TopicRecord, MetadataError> {
        validate_topic_name(&record.name)?;
        if self.topics.contains_key(&record.name) {
            return Err(MetadataError::TopicExists(record.name));
        }
        if record.partitions < 1 || record.partitions > MAX_PARTITIONS {
            return Err(MetadataError::InvalidPartitions(format!(
                "must be between 1 and {MAX_PARTITIONS}, got {}",
                record.partitions
            )));
        }
        topic_config::validate(&record.configs).map_err(MetadataError::InvalidConfig)?;
        if commit {
            self.topics.insert(record.name.clone(), record.clone());
            if let Err(e) = self.save() {
                self.topics.remove(&record.name);
                return Err(e);
            }
        }
        Ok(record)
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<TopicRecord, MetadataError> {
        let Some(rec) = self.topics.remove(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        if let Err(e) = self.save() {
            self.topics.insert(name.to_string(), rec);
            return Err(e);
        }
        Ok(rec)
    }

    /// Grows a topic to `count` partitions (never shrinks).
    pub fn set_partition_count(
        &mut self,
        name: &str,
        count: i32,
        commit: bool,
    ) -> Result<TopicRecord, MetadataError> {
        let Some(rec) = self.topics.get(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        if count <= rec.partitions {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic `{name}` has {} partitions; the count can only grow, got {count}",
                rec.partitions
            )));
        }
        if count > MAX_PARTITIONS {
            return Err(MetadataError::InvalidPartitions(format!(
                "at most {MAX_PARTITIONS} partitions"
            )));
        }
        let mut updated = rec.clone();
        updated.partitions = count;
        if commit {
            self.replace(updated.clone())?;
        }
        Ok(updated)
    }

    /// Replaces a topic's config map.
    pub fn set_configs(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicRecord, MetadataError> {
        let Some(rec) = self.topics.get(name) else {
            return Err(MetadataError::UnknownTopic(name.to_string()));
        };
        topic_config::validate(&configs).map_err(MetadataError::InvalidConfig)?;
        let mut updated = rec.clone();
        updated.configs = configs;
        self.replace(updated.clone())?;
        Ok(updated)
    }

    fn replace(&mut self, rec: TopicRecord) -> Result<(), MetadataError> {
        let old = self.topics.insert(rec.name.clone(), rec.clone());
        if let Err(e) = self.save() {
            if let Some(old) = old {
                self.topics.insert(old.name.clone(), old);
            }
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, p: i32) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: p,
            replication_factor: 1,
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    #[test]
    fn catalog_persists_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        c.create_topic(rec("a", 3), true).unwrap();
        assert!(matches!(
            c.create_topic(rec("a", 3), true),
            Err(MetadataError::TopicExists(_))
        ));
        assert!(matches!(
            c.create_topic(rec("b", 0), true),
            Err(MetadataError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.create_topic(rec("bad/name", 1), true),
            Err(MetadataError::InvalidTopicName(_))
        ));
        c.create_topic(rec("dry", 1), false).unwrap();
        assert!(c.get("dry").is_none());
        c.set_partition_count("a", 5, true).unwrap();
        assert!(c.set_partition_count("a", 4, true).is_err());
        let c2 = Catalog::open(dir.path()).unwrap();
        assert_eq!(c2.get("a").unwrap().partitions, 5);
        let mut c2 = c2;
        c2.delete_topic("a").unwrap();
        assert!(Catalog::open(dir.path()).unwrap().get("a").is_none());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name("a b").is_err());
    }
}
