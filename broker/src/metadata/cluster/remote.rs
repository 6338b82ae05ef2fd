//! The tier's part of the state machine: the remote log of each partition changes
//! only through these checks, so a deposed leader (an older leader epoch) can neither
//! commit an upload nor expire anything, and the remote log never gets a gap or an
//! overlap whoever proposes.

use std::sync::Arc;

use uuid::Uuid;

use super::{ClusterState, PartitionState, TopicMeta};
use crate::metadata::remote_log::{RemoteLog, RemoteSegment};
use crate::metadata::MetadataError;

/// Whether deleting this topic leaves remote objects to remove.
pub(super) fn has_remote_data(t: &TopicMeta) -> bool {
    t.partitions.iter().any(|p| !p.remote.is_pristine())
        || t.record
            .configs
            .get("remote.storage.enable")
            .map(String::as_str)
            == Some("true")
}

impl ClusterState {
    /// The partition, if `topic_id` is still the topic's id and `leader_epoch` is its
    /// current leader's.
    fn led_partition_mut(
        &mut self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
    ) -> Result<&mut PartitionState, MetadataError> {
        if self
            .topics
            .get(topic)
            .is_none_or(|t| t.record.id != topic_id)
        {
            return Err(MetadataError::UnknownTopic(format!(
                "{topic} (id {topic_id})"
            )));
        }
        let p = self.partition_mut(topic, partition)?;
        if p.leader < 0 || leader_epoch != p.leader_epoch {
            return Err(MetadataError::InvalidConfig(format!(
                "stale leader epoch {leader_epoch} for the remote log of {topic}-{partition} (current {})",
                p.leader_epoch
            )));
        }
        Ok(p)
    }

    pub(super) fn commit_remote_segment(
        &mut self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        segment: RemoteSegment,
    ) -> Result<(), MetadataError> {
        let p = self.led_partition_mut(topic, topic_id, partition, leader_epoch)?;
        let mut log = (*p.remote).clone();
        if log
            .commit(segment)
            .map_err(|e| MetadataError::InvalidConfig(e.to_string()))?
        {
            p.remote = Arc::new(log);
        }
        Ok(())
    }

    pub(super) fn expire_remote_segments(
        &mut self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        through: i64,
        log_start: Option<i64>,
    ) -> Result<(), MetadataError> {
        let p = self.led_partition_mut(topic, topic_id, partition, leader_epoch)?;
        let mut log = (*p.remote).clone();
        let expired = !log.expire_through(through).is_empty();
        let moved = log_start.is_some_and(|s| log.delete_below(s));
        if expired || moved {
            p.remote = Arc::new(log);
        }
        Ok(())
    }

    pub(super) fn adopt_remote_log(
        &mut self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        log: RemoteLog,
    ) -> Result<(), MetadataError> {
        let p = self.led_partition_mut(topic, topic_id, partition, leader_epoch)?;
        if *p.remote == log {
            return Ok(());
        }
        if !p.remote.is_pristine() {
            return Err(MetadataError::InvalidConfig(format!(
                "{topic}-{partition} already has a remote log"
            )));
        }
        log.validate()
            .map_err(|e| MetadataError::InvalidConfig(e.to_string()))?;
        p.remote = Arc::new(log);
        Ok(())
    }
}
