//! JoinGroup and the rebalance it starts: new member ids (and MEMBER_ID_REQUIRED),
//! the protocol checks a joiner must pass, a restarted static member taking over its
//! slot, and the PreparingRebalance → CompletingRebalance step — dropping members
//! that did not rejoin, the next generation, the protocol chosen by vote, the leader
//! — that completes every waiting JoinGroup.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use super::{Group, GroupState, JoinRequest, JoinResult, Member, Reply, SyncResult};

impl Group {
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

    pub(super) fn prepare_rebalance(&mut self, now: i64) {
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

    pub(super) fn maybe_complete_join(&mut self, now: i64) {
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
}
