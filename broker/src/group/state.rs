//! One consumer group's membership state machine (Kafka's classic group protocol):
//! Empty → PreparingRebalance → CompletingRebalance → Stable, with generations,
//! session and rebalance timeouts, static membership (`group.instance.id`) and
//! protocol selection by vote. JoinGroup and SyncGroup calls that must wait for other
//! members get a oneshot receiver that this machine completes later. All time is
//! passed in (`now` in ms), so the machine is tested without sleeping.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

pub use super::protocol::{
    GroupConfig, GroupState, JoinRequest, JoinResult, Member, Reply, SyncResult,
};

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

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.member_seq += 1;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        format!("{client_id}-{}-{}", self.member_seq, &nonce[..12])
    }

    /// Protocols every current member supports (in no particular order).
    fn common_protocols<'a>(&'a self, extra: Option<&'a [(String, Bytes)]>) -> Vec<&'a str> {
        let mut lists: Vec<&[(String, Bytes)]> = self
            .members
            .values()
            .map(|m| m.protocols.as_slice())
            .collect();
        if let Some(e) = extra {
            lists.push(e);
        }
        let Some(first) = lists.first() else {
            return Vec::new();
        };
        first
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| lists.iter().all(|l| l.iter().any(|(m, _)| m == n)))
            .collect()
    }

    /// Whether `protocols` has at least one protocol in common with every other member.
    fn shares_a_protocol(&self, member_id: &str, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter(|m| m.id != member_id)
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Handles a JoinGroup.
    pub fn join(&mut self, req: JoinRequest, now: i64) -> Reply<JoinResult> {
        if self.state == GroupState::Dead {
            return Reply::Now(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        if !self.members.is_empty() {
            if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return Reply::Now(JoinResult::error(
                    ResponseError::InconsistentGroupProtocol,
                    &req.member_id,
                ));
            }
            if !self.shares_a_protocol(&req.member_id, &req.protocols) {
                return Reply::Now(JoinResult::error(
                    ResponseError::InconsistentGroupProtocol,
                    &req.member_id,
                ));
            }
        }

        let member_id = if req.member_id.is_empty() {
            if let Some(inst) = &req.instance_id {
                if let Some(old) = self.static_members.get(inst).cloned() {
                    // A static member restarted: it takes over its old slot under a
                    // new id, keeping its assignment.
                    let new_id = self.new_member_id(&req.client_id);
                    return self.replace_static_member(&old, new_id, req, now);
                }
                self.new_member_id(&req.client_id)
            } else if req.require_known_member_id {
                let id = self.new_member_id(&req.client_id);
                self.pending
                    .insert(id.clone(), now + req.session_timeout_ms);
                return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &id));
            } else {
                self.new_member_id(&req.client_id)
            }
        } else {
            if !self.members.contains_key(&req.member_id)
                && self.pending.remove(&req.member_id).is_none()
            {
                return Reply::Now(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &req.member_id,
                ));
            }
            req.member_id.clone()
        };

        if let Some(m) = self.members.get(&member_id) {
            if m.instance_id != req.instance_id {
                return Reply::Now(JoinResult::error(
                    ResponseError::FencedInstanceId,
                    &member_id,
                ));
            }
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&member_id) {
            let unchanged = m.protocols == req.protocols;
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.last_heartbeat_ms = now;
            if self.state == GroupState::Stable
                && unchanged
                && self.leader.as_deref() != Some(member_id.as_str())
            {
                // A follower rejoining with nothing new: hand back the current generation.
                let result = self.join_result_for(&member_id, false);
                return Reply::Now(result);
            }
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinResult::error(
                    ResponseError::UnknownMemberId,
                    &member_id,
                ));
            }
            m.joined = true;
        } else {
            if let Some(inst) = &req.instance_id {
                self.static_members.insert(inst.clone(), member_id.clone());
            }
            if self.members.is_empty() {
                self.protocol_type = Some(req.protocol_type.clone());
            }
            self.next_join_order += 1;
            self.members.insert(
                member_id.clone(),
                Member {
                    id: member_id.clone(),
                    instance_id: req.instance_id,
                    client_id: req.client_id,
                    client_host: req.client_host,
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms: req.rebalance_timeout_ms,
                    protocols: req.protocols,
                    assignment: Bytes::new(),
                    last_heartbeat_ms: now,
                    join_order: self.next_join_order,
                    joined: true,
                    join_waiter: Some(tx),
                    sync_waiter: None,
                },
            );
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
        Reply::Wait(rx)
    }

    fn replace_static_member(
        &mut self,
        old: &str,
        new_id: String,
        req: JoinRequest,
        now: i64,
    ) -> Reply<JoinResult> {
        let Some(mut m) = self.members.remove(old) else {
            if let Some(inst) = &req.instance_id {
                self.static_members.remove(inst);
            }
            return self.join(req, now);
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, old));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = m.protocols == req.protocols;
        m.id = new_id.clone();
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.last_heartbeat_ms = now;
        let was_leader = self.leader.as_deref() == Some(old);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if let Some(inst) = &m.instance_id {
            self.static_members.insert(inst.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), m);
        if self.state == GroupState::Stable && unchanged {
            // Same subscription: no rebalance; the member keeps its partitions. A
            // returning leader gets the member list but is told not to reassign.
            let mut result = self.join_result_for(&new_id, was_leader);
            result.skip_assignment = was_leader;
            return Reply::Now(result);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&new_id) {
            m.join_waiter = Some(tx);
            m.joined = true;
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
        Reply::Wait(rx)
    }

    fn prepare_rebalance(&mut self, now: i64) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline_ms = now + timeout;
        self.initial_delay_until_ms = if was_empty && self.config.initial_rebalance_delay_ms > 0 {
            Some((now + self.config.initial_rebalance_delay_ms).min(self.rebalance_deadline_ms))
        } else {
            None
        };
        for m in self.members.values_mut() {
            if m.join_waiter.is_none() {
                m.joined = false;
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
            }
        }
    }

    fn maybe_complete_join(&mut self, now: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(until) = self.initial_delay_until_ms {
            if now < until {
                return;
            }
            self.initial_delay_until_ms = None;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        if !all_joined && now < self.rebalance_deadline_ms {
            return;
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member_entry(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.join_order)
                .map(|m| m.id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let result = self.join_result_for(&id, is_leader);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat_ms = now;
                m.joined = false;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    /// Each member votes for the first protocol (in its own order) that all support.
    fn select_protocol(&self) -> Option<String> {
        let common = self.common_protocols(None);
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| common.contains(&n.as_str()))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .map(|(n, _)| n.to_string())
    }

    fn join_result_for(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol.clone();
        let members = if with_members {
            let p = protocol.clone().unwrap_or_default();
            let mut ms: Vec<&Member> = self.members.values().collect();
            ms.sort_by_key(|m| m.join_order);
            ms.iter()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&p)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
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
