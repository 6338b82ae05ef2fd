//! Pure translation of an admin-API group description into the
//! ConsumerGroup status, and the replica count its lag asks for (the same
//! numbers the External metric reports, see [`crate::metrics_api`]).

use crate::admin::pb::GroupDescription;
use crate::crd::consumergroup::{AutoscalingSpec, ConsumerGroupSpec, PartitionLagStatus};
use crate::crd::ConsumerGroupStatus;

/// Status fields read from the brokers (conditions and timestamps are added by
/// the shell). `partitions` is the partition count of the group's topics.
pub fn from_description(
    spec: &ConsumerGroupSpec,
    desc: &GroupDescription,
    partitions: i32,
) -> ConsumerGroupStatus {
    let lag = partition_lag(spec, desc);
    let total_lag: i64 = lag.iter().map(|l| l.lag).sum();
    ConsumerGroupStatus {
        state: Some(if desc.state.is_empty() {
            "Unknown".into()
        } else {
            desc.state.clone()
        }),
        members: Some(desc.members.len() as i32),
        total_lag: Some(total_lag),
        partitions: Some(partitions),
        desired_replicas: spec
            .autoscaling
            .as_ref()
            .map(|a| desired_replicas(a, total_lag, partitions)),
        lag,
        ..ConsumerGroupStatus::default()
    }
}

/// Status fields when the brokers do not know the group (nobody joined and
/// nothing was committed): no lag, so the minimum of consumers.
pub fn unknown_group(spec: &ConsumerGroupSpec, partitions: i32) -> ConsumerGroupStatus {
    ConsumerGroupStatus {
        state: Some("Unknown".into()),
        members: Some(0),
        total_lag: Some(0),
        partitions: Some(partitions),
        desired_replicas: spec
            .autoscaling
            .as_ref()
            .map(|a| desired_replicas(a, 0, partitions)),
        ..ConsumerGroupStatus::default()
    }
}

/// Per-partition lag of the group's topics (all topics when none are listed),
/// sorted by topic and partition.
pub fn partition_lag(spec: &ConsumerGroupSpec, desc: &GroupDescription) -> Vec<PartitionLagStatus> {
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
    lag
}

/// The topics whose partitions bound the consumers: the listed ones, else
/// those the group has committed offsets for.
pub fn group_topics(spec: &ConsumerGroupSpec, desc: Option<&GroupDescription>) -> Vec<String> {
    if !spec.topics.is_empty() {
        return spec.topics.clone();
    }
    let mut topics: Vec<String> = desc
        .map(|d| d.lag.iter().map(|l| l.topic.clone()).collect())
        .unwrap_or_default();
    topics.sort();
    topics.dedup();
    topics
}

/// KEDA's Kafka-scaler semantics: `ceil(lag / lagPerReplica)`, at least
/// `minReplicas`, at most `maxReplicas` (default: the partition count, since
/// extra consumers would sit idle).
pub fn desired_replicas(a: &AutoscalingSpec, total_lag: i64, partitions: i32) -> i32 {
    let per = a.lag_per_replica.max(1);
    let wanted = total_lag.max(0).saturating_add(per - 1) / per;
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    wanted.min(max_replicas(a, partitions)).max(a.min_replicas)
}

/// The HPA's upper bound: `maxReplicas`, or the partition count (never below `minReplicas`).
pub fn max_replicas(a: &AutoscalingSpec, partitions: i32) -> i32 {
    a.max_replicas
        .unwrap_or(partitions)
        .max(a.min_replicas)
        .max(1)
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
        let st = from_description(&s, &desc, 2);
        assert_eq!(st.state.as_deref(), Some("Stable"));
        assert_eq!(st.members, Some(2));
        assert_eq!(st.total_lag, Some(300));
        assert_eq!(st.lag[0].partition, 0);
        assert_eq!(st.lag.len(), 2);
        assert_eq!(st.partitions, Some(2));
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
        assert_eq!(desired_replicas(&a, -5, 12), 1);
        let b: AutoscalingSpec =
            serde_yaml::from_str("targetRef: {name: c}\nlagPerReplica: 10").expect("b");
        assert_eq!(b.min_replicas, 1);
        assert_eq!(desired_replicas(&b, 0, 4), 1);
        // maxReplicas defaults to the partition count.
        assert_eq!(desired_replicas(&b, 1000, 4), 4);
        assert_eq!(max_replicas(&b, 4), 4);
        // No partitions known yet: the HPA still needs max >= min >= 1.
        assert_eq!(max_replicas(&b, 0), 1);
    }

    #[test]
    fn group_topics_are_the_listed_ones_else_the_committed_ones() {
        let desc = GroupDescription {
            lag: vec![lag("b", 0, 1), lag("a", 1, 1), lag("a", 0, 1)],
            ..GroupDescription::default()
        };
        let listed = spec("clusterRef: demo\ngroupId: g\ntopics: [x]");
        assert_eq!(group_topics(&listed, Some(&desc)), vec!["x".to_string()]);
        let all = spec("clusterRef: demo\ngroupId: g");
        assert_eq!(
            group_topics(&all, Some(&desc)),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(group_topics(&all, None).is_empty());
    }
}
