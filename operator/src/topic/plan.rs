//! Pure topic reducer: what to do to make the broker topic match the spec, and
//! what the Ready condition says about it. Nothing here talks to a broker.

use std::collections::BTreeMap;

use crate::admin::pb::TopicDescription;
use crate::crd::condition::Desired;
use crate::crd::TopicSpec;

/// The broker topic as the admin API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedTopic {
    pub topic_id: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Explicitly set config values.
    pub config: BTreeMap<String, String>,
    /// Partition → replicas (preferred leader first).
    pub assignment: Vec<(i32, Vec<i32>)>,
}

impl From<&TopicDescription> for ObservedTopic {
    fn from(d: &TopicDescription) -> Self {
        let mut assignment: Vec<(i32, Vec<i32>)> = d
            .partition_details
            .iter()
            .map(|p| (p.partition, p.replicas.clone()))
            .collect();
        assignment.sort();
        ObservedTopic {
            topic_id: d.topic_id.clone(),
            partitions: d.partitions,
            replication_factor: d.replication_factor,
            config: d.configs.clone().into_iter().collect(),
            assignment,
        }
    }
}

/// One admin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicAction {
    Create {
        partitions: i32,
        replication_factor: i32,
        config: BTreeMap<String, String>,
    },
    AddPartitions {
        total: i32,
    },
    /// Replace the explicit config with exactly this map (the CR wins).
    ReplaceConfig {
        config: BTreeMap<String, String>,
    },
    /// Give every partition this many replicas (the brokers move them).
    SetReplicationFactor {
        replication_factor: i32,
    },
}

/// The Ready condition's reason while partitions move to a new replication factor.
pub const CHANGING_RF: &str = "ChangingReplicationFactor";

/// Actions to run in order, and the condition to report once they succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<TopicAction>,
    pub condition: Desired,
}

/// Reduces desired + observed to a plan. `brokers` is the cluster's broker count.
pub fn plan(spec: &TopicSpec, observed: Option<&ObservedTopic>, brokers: i32) -> Plan {
    let Some(obs) = observed else {
        if spec.replication_factor > brokers {
            return Plan {
                actions: vec![],
                condition: Desired::not_ready(
                    "ReplicationFactorTooLarge",
                    format!(
                        "replicationFactor {} exceeds the cluster's {brokers} brokers",
                        spec.replication_factor
                    ),
                ),
            };
        }
        return Plan {
            actions: vec![TopicAction::Create {
                partitions: spec.partitions,
                replication_factor: spec.replication_factor,
                config: spec.config.clone(),
            }],
            condition: Desired::ready("Created", "topic created"),
        };
    };
    let mut actions = Vec::new();
    if spec.config != obs.config {
        actions.push(TopicAction::ReplaceConfig {
            config: spec.config.clone(),
        });
    }
    let mut problems = Vec::new();
    if spec.partitions > obs.partitions {
        actions.push(TopicAction::AddPartitions {
            total: spec.partitions,
        });
    } else if spec.partitions < obs.partitions {
        problems.push(format!(
            "partitions cannot decrease (spec {}, topic has {})",
            spec.partitions, obs.partitions
        ));
    }
    let mut too_large = None;
    if spec.replication_factor != obs.replication_factor {
        if spec.replication_factor > brokers {
            too_large = Some(format!(
                "replicationFactor {} exceeds the cluster's {brokers} brokers (the topic keeps {})",
                spec.replication_factor, obs.replication_factor
            ));
        } else {
            actions.push(TopicAction::SetReplicationFactor {
                replication_factor: spec.replication_factor,
            });
        }
    }
    // After a change, partitions reach the new factor as their moves complete.
    let rf = usize::try_from(spec.replication_factor).unwrap_or(0);
    let moving = obs
        .assignment
        .iter()
        .filter(|(_, replicas)| replicas.len() != rf)
        .count();
    let condition = if !problems.is_empty() {
        Desired::not_ready("NotSupported", problems.join("; "))
    } else if let Some(msg) = too_large {
        Desired::not_ready("ReplicationFactorTooLarge", msg)
    } else if spec.replication_factor != obs.replication_factor || moving > 0 {
        Desired::ready(
            CHANGING_RF,
            format!(
                "moving to replication factor {}: {} of {} partitions there",
                spec.replication_factor,
                obs.assignment.len() - moving.min(obs.assignment.len()),
                obs.assignment.len()
            ),
        )
    } else if actions.is_empty() {
        Desired::ready("InSync", "topic matches the spec")
    } else {
        Desired::ready("Updated", "topic updated to match the spec")
    };
    Plan { actions, condition }
}

/// `0:[1,2,0] 1:[2,0,1] …`, at most `limit` partitions, for the status.
pub fn assignment_summary(obs: &ObservedTopic, limit: usize) -> String {
    let mut parts: Vec<String> = obs
        .assignment
        .iter()
        .take(limit)
        .map(|(p, r)| {
            let replicas: Vec<String> = r.iter().map(i32::to_string).collect();
            format!("{p}:[{}]", replicas.join(","))
        })
        .collect();
    if obs.assignment.len() > limit {
        parts.push(format!("… +{}", obs.assignment.len() - limit));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TopicSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    fn observed(partitions: i32, rf: i32, config: &[(&str, &str)]) -> ObservedTopic {
        ObservedTopic {
            topic_id: "id".into(),
            partitions,
            replication_factor: rf,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            assignment: (0..partitions).map(|p| (p, vec![p % 3])).collect(),
        }
    }

    #[test]
    fn missing_topic_is_created_with_spec_values() {
        let s = spec("clusterRef: demo\npartitions: 3\nreplicationFactor: 2\nconfig:\n  retention.ms: \"1000\"");
        let p = plan(&s, None, 3);
        assert_eq!(
            p.actions,
            [TopicAction::Create {
                partitions: 3,
                replication_factor: 2,
                config: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            }]
        );
        assert!(p.condition.ready);
    }

    #[test]
    fn replication_factor_above_broker_count_is_reported_not_attempted() {
        let s = spec("clusterRef: demo\npartitions: 3\nreplicationFactor: 5");
        let p = plan(&s, None, 3);
        assert!(p.actions.is_empty());
        assert_eq!(p.condition.reason, "ReplicationFactorTooLarge");
        assert!(!p.condition.ready);
    }

    #[test]
    fn partitions_grow_and_config_is_replaced() {
        let s = spec("clusterRef: demo\npartitions: 6\nconfig:\n  cleanup.policy: compact");
        let p = plan(&s, Some(&observed(3, 1, &[("retention.ms", "5")])), 1);
        assert_eq!(
            p.actions,
            [
                TopicAction::ReplaceConfig {
                    config: BTreeMap::from([("cleanup.policy".into(), "compact".into())])
                },
                TopicAction::AddPartitions { total: 6 },
            ]
        );
        assert_eq!(p.condition.reason, "Updated");
    }

    #[test]
    fn partition_decrease_is_not_supported_and_not_an_error() {
        let s = spec("clusterRef: demo\npartitions: 2");
        let p = plan(&s, Some(&observed(6, 1, &[])), 1);
        assert!(p.actions.is_empty());
        assert!(!p.condition.ready);
        assert_eq!(p.condition.reason, "NotSupported");
        assert!(p.condition.message.contains("spec 2, topic has 6"));
    }

    #[test]
    fn matching_topic_needs_nothing() {
        let s = spec("clusterRef: demo\npartitions: 3");
        let p = plan(&s, Some(&observed(3, 1, &[])), 3);
        assert!(p.actions.is_empty());
        assert_eq!(
            p.condition,
            Desired::ready("InSync", "topic matches the spec")
        );
    }

    #[test]
    fn assignment_summary_is_bounded() {
        let o = observed(5, 1, &[]);
        assert_eq!(assignment_summary(&o, 2), "0:[0] 1:[1] … +3");
        assert_eq!(assignment_summary(&o, 10), "0:[0] 1:[1] 2:[2] 3:[0] 4:[1]");
    }

    #[test]
    fn a_replication_factor_change_moves_replicas_and_reports_progress() {
        let s = spec("clusterRef: demo\npartitions: 3\nreplicationFactor: 3");
        // Asked for: one call, Ready while the moves run.
        let p = plan(&s, Some(&observed(3, 1, &[])), 3);
        assert_eq!(
            p.actions,
            [TopicAction::SetReplicationFactor {
                replication_factor: 3
            }]
        );
        assert!(p.condition.ready);
        assert_eq!(p.condition.reason, CHANGING_RF);
        // The brokers recorded it; one partition has its three replicas so far.
        let mut moving = observed(3, 3, &[]);
        moving.assignment = vec![(0, vec![0, 1, 2]), (1, vec![1]), (2, vec![2, 0])];
        let p = plan(&s, Some(&moving), 3);
        assert!(p.actions.is_empty(), "no second call: {:?}", p.actions);
        assert_eq!(p.condition.reason, CHANGING_RF);
        assert!(
            p.condition.message.contains("1 of 3 partitions"),
            "{}",
            p.condition.message
        );
        // Done.
        moving.assignment = (0..3).map(|i| (i, vec![0, 1, 2])).collect();
        assert_eq!(plan(&s, Some(&moving), 3).condition.reason, "InSync");
        // More than the cluster has: reported, nothing attempted, the topic keeps its factor.
        let p = plan(&s, Some(&observed(3, 1, &[])), 2);
        assert!(p.actions.is_empty());
        assert!(!p.condition.ready);
        assert_eq!(p.condition.reason, "ReplicationFactorTooLarge");
        assert!(
            p.condition.message.contains("keeps 1"),
            "{}",
            p.condition.message
        );
    }
}
