//! Pure translation of an admin-API group description into the
//! ConsumerGroup status, and the replica count its lag asks for.

use crate::admin::pb::GroupDescription;
use crate::crd::consumergroup::{
    AutoscalingSpec, ConsumerGroupSpec, OffsetResetStatus, PartitionLagStatus,
};
use crate::crd::ConsumerGroupStatus;

/// Status fields read from the brokers (conditions and timestamps are added by the shell).
pub fn from_description(spec: &ConsumerGroupSpec, desc: &GroupDescription) -> ConsumerGroupStatus {
    let mut lag: Vec<PartitionLagStatus> = desc
        .lag
        .iter()
        .filter(|l| spec.topics.is_empty() || spec.topics.contains(&l.topic))
        .map(|l| PartitionLagStatus {
            topic: l.topic.clone(),
            partition: l.partition,
            committed_offset: l.committed_offset,
            end_offset: l.end_offset,
            lag: l.lag.max(0),
        })
        .collect();
    lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let total_lag: i64 = lag.iter().map(|l| l.lag).sum();
    let partitions = lag.len() as i32;
    ConsumerGroupStatus {
        state: Some(if desc.state.is_empty() {
            "Unknown".into()
        } else {
            desc.state.clone()
        }),
        members: Some(desc.members.len() as i32),
        total_lag: Some(total_lag),
        desired_replicas: spec
            .autoscaling
            .as_ref()
            .map(|a| desired_replicas(a, total_lag, partitions)),
        lag,
        ..ConsumerGroupStatus::default()
    }
}

/// KEDA's Kafka-scaler semantics: `ceil(lag / lagPerReplica)`, at least
/// `minReplicas`, at most `maxReplicas` (default: the partition count, since
/// extra consumers would sit idle).
pub fn desired_replicas(a: &AutoscalingSpec, total_lag: i64, partitions: i32) -> i32 {
    let per = a.lag_per_replica.max(1);
    let wanted = total_lag.saturating_add(per - 1) / per;
    let max = a.max_replicas.unwrap_or(partitions.max(1));
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    wanted.min(max).max(a.min_replicas)
}

/// Offset resets need an admin RPC the broker does not have yet; say so.
pub fn offset_reset_outcome(spec: &ConsumerGroupSpec, state: &str) -> Option<OffsetResetStatus> {
    let req = spec.offset_reset.as_ref()?;
    Some(if state != "Empty" && state != "Dead" {
        OffsetResetStatus {
            request_id: req.request_id.clone(),
            phase: "Pending".into(),
            message: Some(format!("waiting for the group to be Empty (now {state})")),
        }
    } else {
        OffsetResetStatus {
            request_id: req.request_id.clone(),
            phase: "Unsupported".into(),
            message: Some("the broker admin API has no offset reset call yet".into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::pb::{GroupMember, PartitionLag};

    fn spec(yaml: &str) -> ConsumerGroupSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    fn lag(topic: &str, partition: i32, lag: i64) -> PartitionLag {
        PartitionLag {
            topic: topic.into(),
            partition,
            committed_offset: 10,
            end_offset: 10 + lag,
            lag,
        }
    }

    #[test]
    fn status_sums_lag_of_the_listed_topics() {
        let s = spec("clusterRef: demo\ngroupId: g\ntopics: [orders]\nautoscaling:\n  targetRef: {name: c}\n  lagPerReplica: 100");
        let desc = GroupDescription {
            group_id: "g".into(),
            state: "Stable".into(),
            members: vec![GroupMember::default(), GroupMember::default()],
            lag: vec![
                lag("orders", 1, 250),
                lag("orders", 0, 50),
                lag("other", 0, 1000),
            ],
            ..GroupDescription::default()
        };
        let st = from_description(&s, &desc);
        assert_eq!(st.state.as_deref(), Some("Stable"));
        assert_eq!(st.members, Some(2));
        assert_eq!(st.total_lag, Some(300));
        assert_eq!(st.lag[0].partition, 0);
        assert_eq!(st.lag.len(), 2);
        // ceil(300/100) = 3, capped at 2 partitions.
        assert_eq!(st.desired_replicas, Some(2));
    }

    #[test]
    fn desired_replicas_follow_lag_within_bounds() {
        let a: AutoscalingSpec = serde_yaml::from_str(
            "targetRef: {name: c}\nminReplicas: 1\nmaxReplicas: 10\nlagPerReplica: 1000",
        )
        .expect("a");
        assert_eq!(desired_replicas(&a, 0, 12), 1);
        assert_eq!(desired_replicas(&a, 1001, 12), 2);
        assert_eq!(desired_replicas(&a, 1_000_000, 12), 10);
        let b: AutoscalingSpec =
            serde_yaml::from_str("targetRef: {name: c}\nminReplicas: 0\nlagPerReplica: 10")
                .expect("b");
        assert_eq!(desired_replicas(&b, 0, 4), 0);
        assert_eq!(desired_replicas(&b, 1000, 4), 4);
    }

    #[test]
    fn offset_reset_waits_for_an_empty_group() {
        let s =
            spec("clusterRef: demo\ngroupId: g\noffsetReset: {target: Earliest, requestId: r1}");
        let pending = offset_reset_outcome(&s, "Stable").expect("some");
        assert_eq!(pending.phase, "Pending");
        assert_eq!(
            offset_reset_outcome(&s, "Empty").expect("some").phase,
            "Unsupported"
        );
        assert!(offset_reset_outcome(&spec("clusterRef: demo\ngroupId: g"), "Empty").is_none());
    }
}
