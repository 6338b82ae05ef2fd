//! What the state says about partition health, for the metrics, the admin API's
//! broker and cluster descriptions, and the operator's rolling restarts: partitions
//! under-replicated, offline, at or under their topic's `min.insync.replicas`, and
//! those that would drop below it if one broker stopped.

use super::ClusterState;
use crate::metadata::TopicRecord;

/// A topic's `min.insync.replicas` (1 when unset or unreadable, as the broker default).
pub fn min_insync_replicas(record: &TopicRecord) -> usize {
    record
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
}

impl ClusterState {
    /// Partitions that would fall below their topic's `min.insync.replicas` if
    /// `broker` stopped, although they have a replica to spare: it is in their ISR,
    /// the ISR is no larger than that minimum, and the replication factor is above
    /// it (so waiting for the other replicas to catch up helps). Partitions with no
    /// replica to spare are [`min_isr_no_spare`](Self::min_isr_no_spare) instead.
    pub fn min_isr_at_risk(&self, broker: i32) -> usize {
        self.topics
            .values()
            .flat_map(|t| {
                let min = min_insync_replicas(&t.record);
                t.partitions.iter().filter(move |p| {
                    p.replicas.len() > min && p.isr.contains(&broker) && p.isr.len() <= min
                })
            })
            .count()
    }

    /// Partitions whose ISR has shrunk to exactly their topic's `min.insync.replicas`
    /// although they have more replicas: acks=all writes still succeed, but one more
    /// replica falling out of the ISR stops them. Topics whose replication factor is at
    /// or below the minimum sit there by design and are left out (see
    /// [`min_isr_no_spare`](Self::min_isr_no_spare)), so this is worth an alert.
    pub fn at_min_isr(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| {
                let min = min_insync_replicas(&t.record);
                t.partitions
                    .iter()
                    .filter(move |p| p.replicas.len() > min && p.isr.len() == min)
            })
            .count()
    }

    /// Partitions whose ISR is smaller than their topic's `min.insync.replicas`: the
    /// leader refuses acks=all writes with NOT_ENOUGH_REPLICAS (the rule of
    /// `Partition::check_leader`).
    pub fn under_min_isr(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| {
                let min = min_insync_replicas(&t.record);
                t.partitions.iter().filter(move |p| p.isr.len() < min)
            })
            .count()
    }

    /// Topics whose replication factor is at or below their `min.insync.replicas`:
    /// acks=all writes fail while any of their brokers is down (or always, below).
    pub fn min_isr_no_spare(&self) -> Vec<String> {
        self.topics
            .values()
            .filter(|t| {
                let min = min_insync_replicas(&t.record);
                t.partitions.iter().any(|p| p.replicas.len() <= min)
            })
            .map(|t| t.record.name.clone())
            .collect()
    }

    /// Partitions whose ISR is smaller than their replica set.
    pub fn under_replicated(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.isr.len() < p.replicas.len())
            .count()
    }

    /// Partitions without a leader.
    pub fn offline(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader < 0)
            .count()
    }
}
