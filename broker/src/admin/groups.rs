//! The admin API's consumer-group calls: listing groups across brokers, describing a
//! group with its members and lag, and resetting its committed offsets. Calls for a
//! group coordinated elsewhere are forwarded to its coordinator.

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use tonic::{Request, Response, Status};

use super::pb::*;
use super::{lag, AdminService, FORWARD_TIMEOUT};
use crate::group::state::GroupState;

impl AdminService {
    pub(super) async fn list_groups_impl(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let mut groups: BTreeMap<String, GroupListing> = self
            .broker
            .groups
            .list()
            .into_iter()
            .map(|l| {
                let g = GroupListing {
                    group_id: l.group_id,
                    state: l.state.name().to_string(),
                    protocol_type: l.protocol_type,
                };
                (g.group_id.clone(), g)
            })
            .collect();
        let mut unavailable_brokers = Vec::new();
        if !r.into_inner().local_only {
            let (answers, silent) = self
                .ask_live_peers("ListGroups", |mut c| async move {
                    c.list_groups(ListGroupsRequest { local_only: true })
                        .await
                        .map(Response::into_inner)
                })
                .await;
            // A group whose coordinator just moved may be listed twice.
            for g in answers.into_iter().flat_map(|r| r.groups) {
                groups.entry(g.group_id.clone()).or_insert(g);
            }
            unavailable_brokers = silent;
        }
        Ok(Response::new(ListGroupsResponse {
            groups: groups.into_values().collect(),
            unavailable_brokers,
        }))
    }

    pub(super) async fn describe_group_impl(
        &self,
        r: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        let id = r.into_inner().group_id;
        if let Some(mut c) = self.coordinator_client(&id)? {
            let mut forward = Request::new(DescribeGroupRequest { group_id: id });
            forward.set_timeout(FORWARD_TIMEOUT);
            return c.describe_group(forward).await;
        }
        let lag = lag::group_lag(&self.broker, &id).await;
        let total_lag = lag.iter().map(|l| l.lag).sum();
        let mut d = GroupDescription {
            group_id: id.clone(),
            state: GroupState::Empty.name().to_string(),
            lag,
            total_lag,
            ..Default::default()
        };
        match self.broker.groups.group(&id) {
            Some(g) => {
                let g = g.lock();
                d.state = g.state().name().to_string();
                d.protocol_type = g.protocol_type().unwrap_or("").to_string();
                d.protocol = g.protocol().unwrap_or("").to_string();
                d.generation = g.generation();
                d.members = g
                    .members()
                    .map(|m| GroupMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone().unwrap_or_default(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        assignment: decode_assignment(&m.assignment),
                    })
                    .collect();
            }
            None if d.lag.is_empty() && self.broker.groups.group_offsets(&id).is_empty() => {
                return Err(Status::not_found(format!("unknown group `{id}`")));
            }
            None => {}
        }
        Ok(Response::new(d))
    }

    pub(super) async fn reset_group_offsets_impl(
        &self,
        r: Request<ResetGroupOffsetsRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        use reset_group_offsets_request::Target;
        let r = r.into_inner();
        if let Some(mut c) = self.coordinator_client(&r.group_id)? {
            let mut forward = Request::new(r);
            forward.set_timeout(FORWARD_TIMEOUT);
            return c.reset_group_offsets(forward).await;
        }
        if let Some(g) = self.broker.groups.group(&r.group_id) {
            if !g.lock().is_empty() {
                return Err(Status::failed_precondition(format!(
                    "group `{}` has active members; stop its consumers before resetting offsets",
                    r.group_id
                )));
            }
        }
        let target = Target::try_from(r.target)
            .ok()
            .filter(|t| *t != Target::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument("target must be EARLIEST, LATEST, OFFSET or TIMESTAMP")
            })?;
        let topics: Vec<String> = if r.topics.is_empty() {
            let mut names: Vec<String> = self
                .broker
                .groups
                .group_offsets(&r.group_id)
                .into_keys()
                .map(|(t, _)| t)
                .collect();
            names.dedup();
            names
        } else {
            r.topics.clone()
        };
        if topics.is_empty() {
            return Err(Status::not_found(format!(
                "group `{}` has no committed offsets; name the topics to reset",
                r.group_id
            )));
        }
        let now = crate::clock::now_ms();
        let mut changes = Vec::new();
        for name in &topics {
            let t = self.topic(name)?;
            for p in t.local() {
                let (start, end) = (p.log_start_offset(), p.high_watermark());
                let offset = match target {
                    Target::Earliest => start,
                    Target::Latest | Target::Unspecified => end,
                    Target::Offset => r.value.clamp(start, end),
                    Target::Timestamp => p
                        .offset_for_timestamp(r.value)
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_or(end, |(o, _)| o),
                };
                changes.push((
                    r.group_id.clone(),
                    name.clone(),
                    p.index,
                    Some(crate::group::offsets::CommittedOffset {
                        offset,
                        leader_epoch: -1,
                        metadata: Some("reset by strata admin".into()),
                        commit_timestamp: now,
                    }),
                ));
            }
        }
        self.broker
            .groups
            .write_durable(&r.group_id, changes, now)
            .await
            .map_err(|e| Status::internal(format!("cannot write offsets: {e:?}")))?;
        self.describe_group_impl(Request::new(DescribeGroupRequest {
            group_id: r.group_id,
        }))
        .await
    }
}

/// "topic-partition" strings from a consumer-protocol assignment (empty if the group
/// uses another protocol).
fn decode_assignment(raw: &bytes::Bytes) -> Vec<String> {
    let mut b = raw.clone();
    if b.len() < 2 {
        return Vec::new();
    }
    let version = b.get_i16();
    match ConsumerProtocolAssignment::decode(&mut b, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|tp| {
                tp.partitions
                    .iter()
                    .map(move |p| format!("{}-{p}", tp.topic.0))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
