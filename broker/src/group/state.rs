//! One consumer group's membership state machine (Kafka's classic group protocol):
//! Empty → PreparingRebalance → CompletingRebalance → Stable, with generations,
//! session and rebalance timeouts, static membership (`group.instance.id`) and
//! protocol selection by vote. JoinGroup and SyncGroup calls that must wait for other
//! members get a oneshot receiver that this machine completes later. All time is
//! passed in (`now` in ms), so the machine is tested without sleeping.
//!
//! This file holds the group itself, what joined members do (SyncGroup, Heartbeat,
//! LeaveGroup, the OffsetCommit check) and the timers; `join` holds JoinGroup and the
//! rebalance it drives.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

pub use super::protocol::{
    GroupConfig, GroupState, JoinRequest, JoinResult, Member, Reply, SyncResult,
};

mod join;

#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    static_members: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    /// While the first members of an empty group gather.
    initial_delay_until_ms: Option<i64>,
    next_join_order: u64,
    member_seq: u64,
    config: GroupConfig,
}

impl Group {
    pub fn new(id: &str, config: GroupConfig) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            next_join_order: 0,
            member_seq: 0,
            config,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn has_member(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    /// Marks the group deleted; waiting members are told to find the coordinator again.
    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(
                    ResponseError::CoordinatorNotAvailable,
                    &m.id,
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::CoordinatorNotAvailable));
            }
        }
        self.members.clear();
    }

    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let Some(m) = self.members.get(member_id) else {
            if let Some(inst) = instance_id {
                if self.static_members.contains_key(inst) {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
            return Err(ResponseError::UnknownMemberId);
        };
        if instance_id.is_some() && m.instance_id.as_deref() != instance_id {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Checks an OffsetCommit's member id, instance id and generation. Commits with
    /// generation -1 and no member id are "simple" commits, allowed only while the
    /// group has no members.
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        if self.members.is_empty() {
            return Err(ResponseError::IllegalGeneration);
        }
        self.validate_member(member_id, instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Handles a SyncGroup.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> Reply<SyncResult> {
        if let Err(e) = self.validate_member(member_id, instance_id, generation) {
            return Reply::Now(SyncResult::error(e));
        }
        match self.state {
            GroupState::PreparingRebalance => {
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => Reply::Now(self.sync_result_for(member_id)),
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(SyncResult::error(ResponseError::UnknownMemberId))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                    m.sync_waiter = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let r = self.sync_result_for(&id);
                        if let Some(m) = self.members.get_mut(&id) {
                            if let Some(w) = m.sync_waiter.take() {
                                let _ = w.send(r);
                            }
                        }
                    }
                }
                Reply::Wait(rx)
            }
        }
    }

    fn sync_result_for(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> Option<ResponseError> {
        if let Err(e) = self.validate_member(member_id, instance_id, generation) {
            return Some(e);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            _ => None,
        }
    }

    /// Handles one member leaving (by member id, or by instance id for static members).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> Option<ResponseError> {
        let id = match instance_id {
            Some(inst) => match self.static_members.get(inst) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id, now);
        None
    }

    fn remove_member_entry(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(inst) = &m.instance_id {
                if self.static_members.get(inst).map(String::as_str) == Some(id) {
                    self.static_members.remove(inst);
                }
            }
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn remove_member(&mut self, id: &str, now: i64) {
        self.remove_member_entry(id);
        if self.members.is_empty() && self.state != GroupState::PreparingRebalance {
            self.generation += 1;
            self.state = GroupState::Empty;
            self.protocol = None;
            return;
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
    }

    /// Expires silent members and completes rebalances whose deadline passed.
    /// Returns the ids of members removed for missing their session timeout.
    pub fn tick(&mut self, now: i64) -> Vec<String> {
        self.pending.retain(|_, until| *until > now);
        // As in Kafka, a member's session also runs out during a rebalance
        // unless it has rejoined and is waiting for the round to finish: a
        // member killed mid-rebalance is dropped after its session timeout,
        // not only at the (much longer) rebalance deadline.
        let state = self.state;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| match state {
                GroupState::Stable | GroupState::CompletingRebalance => true,
                GroupState::PreparingRebalance => !m.joined && m.join_waiter.is_none(),
                GroupState::Empty | GroupState::Dead => false,
            })
            .filter(|m| now - m.last_heartbeat_ms > m.session_timeout_ms)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, now);
        }
        self.maybe_complete_join(now);
        expired
    }

    /// Whether any member's subscription includes `topic` (consumer protocol only).
    pub fn subscribed_to(&self, topic: &str) -> bool {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return false;
        }
        let Some(p) = &self.protocol else {
            return false;
        };
        self.members.values().any(|m| {
            let mut meta = m.metadata(p);
            if meta.len() < 2 {
                return false;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]);
            bytes::Buf::advance(&mut meta, 2);
            ConsumerProtocolSubscription::decode(&mut meta, version)
                .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
                .unwrap_or(false)
        })
    }
}

#[cfg(test)]
mod tests;
