//! Reading a group from the brokers: its description (state, members,
//! per-partition lag) and the partition count of its topics. Shared by the
//! controller (status) and the External metrics server (live lag for the HPA).

use crate::admin::{pb, Admin, AdminError};
use crate::crd::ConsumerGroupSpec;

use super::status::{group_topics, partition_lag};

/// What the brokers say about one group.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// None when the brokers do not know the group (nobody joined, nothing committed).
    pub description: Option<pb::GroupDescription>,
    /// Partitions of the group's topics (0 when none is known).
    pub partitions: i32,
}

impl Observation {
    /// Sum of the per-partition lag of the group's topics.
    pub fn total_lag(&self, spec: &ConsumerGroupSpec) -> i64 {
        self.description
            .as_ref()
            .map(|d| partition_lag(spec, d).iter().map(|l| l.lag).sum())
            .unwrap_or(0)
    }
}

/// Describes the group and its topics.
pub async fn observe(
    client: &mut Admin,
    spec: &ConsumerGroupSpec,
) -> Result<Observation, AdminError> {
    let description = match client
        .describe_group(pb::DescribeGroupRequest {
            group_id: spec.group_id.clone(),
        })
        .await
    {
        Ok(resp) => Some(resp.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => return Err(s.into()),
    };
    let mut partitions = 0i32;
    for topic in group_topics(spec, description.as_ref()) {
        let count = match client
            .describe_topic(pb::DescribeTopicRequest {
                name: topic.clone(),
            })
            .await
        {
            Ok(resp) => resp.into_inner().partitions,
            // A topic that is gone: count what the group still has commits for.
            Err(s) if s.code() == tonic::Code::NotFound => description
                .as_ref()
                .map(|d| d.lag.iter().filter(|l| l.topic == topic).count() as i32)
                .unwrap_or(0),
            Err(s) => return Err(s.into()),
        };
        partitions = partitions.saturating_add(count);
    }
    Ok(Observation {
        description,
        partitions,
    })
}
