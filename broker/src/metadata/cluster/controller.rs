//! The controller's decisions over [`ClusterState`], as pure functions: where the
//! replicas of new partitions go, whom to fence and which leaders to elect after
//! missed heartbeats, and the next steps of reassignments, drains and preferred
//! leader elections. The Raft leader runs them and proposes the commands they return.

use std::collections::{BTreeMap, BTreeSet};

use super::{BrokerInfo, BrokerStatus, ClusterState, Command};
use crate::metadata::MetadataError;

/// Rack-aware replica placement for `partitions` new partitions (Kafka's scheme):
/// brokers are ordered so consecutive ones alternate racks, partition `p`'s first
/// replica is broker `(start + p) % n`, and each following replica is the next broker
/// in that order, so leaders spread evenly and each partition spans as many racks as
/// it can. Draining and fenced brokers get no new replicas.
pub fn assign_replicas(
    state: &ClusterState,
    partitions: i32,
    rf: i16,
    start: usize,
) -> Result<Vec<Vec<i32>>, MetadataError> {
    let eligible: Vec<&BrokerInfo> = state
        .brokers
        .values()
        .filter(|b| b.status == BrokerStatus::Alive && !b.draining)
        .collect();
    let rf = usize::try_from(rf).unwrap_or(0);
    if rf == 0 {
        return Err(MetadataError::InvalidReplicationFactor(
            "must be >= 1".into(),
        ));
    }
    if rf > eligible.len() {
        return Err(MetadataError::InvalidReplicationFactor(format!(
            "replication factor {rf} is larger than the {} available broker(s)",
            eligible.len()
        )));
    }
    // Interleave racks: a1, b1, c1, a2, b2, ...
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for b in &eligible {
        by_rack
            .entry(b.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(b.id);
    }
    let mut order = Vec::with_capacity(eligible.len());
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                order.push(*id);
            }
        }
    }
    let rack_of: BTreeMap<i32, &str> = eligible
        .iter()
        .map(|b| (b.id, b.rack.as_deref().unwrap_or("")))
        .collect();
    let racks = by_rack.len();
    let n = order.len();
    let mut out = Vec::with_capacity(partitions.max(0) as usize);
    for p in 0..partitions.max(0) as usize {
        let first = (start + p) % n;
        let mut replicas = vec![order[first]];
        let mut used_racks: BTreeSet<&str> = BTreeSet::from([rack_of[&order[first]]]);
        // Walk the ring from the leader: first take brokers on racks not used yet
        // (while some remain), then anyone not already chosen.
        for prefer_new_rack in [true, false] {
            for k in 1..n {
                if replicas.len() == rf {
                    break;
                }
                let b = order[(first + k) % n];
                if replicas.contains(&b) {
                    continue;
                }
                let rack = rack_of[&b];
                if prefer_new_rack && (used_racks.contains(rack) || used_racks.len() >= racks) {
                    continue;
                }
                used_racks.insert(rack);
                replicas.push(b);
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

/// New replica lists that give every partition of `topic` `rf` replicas, as moves
/// `(partition, target)` for the partitions that change. Growing adds the live,
/// undrained brokers holding the fewest replicas (preferring racks the partition
/// does not use yet, then the lowest id); shrinking drops replicas from the end of
/// the list, never the current leader. Refused while one of the topic's partitions
/// is being reassigned, or when `rf` exceeds the brokers that can hold a replica.
pub fn replication_factor_moves(
    state: &ClusterState,
    topic: &str,
    rf: usize,
) -> Result<Vec<(i32, Vec<i32>)>, MetadataError> {
    let t = state
        .topics
        .get(topic)
        .ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?;
    let eligible: Vec<&BrokerInfo> = state
        .brokers
        .values()
        .filter(|b| b.status == BrokerStatus::Alive && !b.draining)
        .collect();
    if rf == 0 {
        return Err(MetadataError::InvalidReplicationFactor(
            "must be >= 1".into(),
        ));
    }
    if let Some(i) = t.partitions.iter().position(|p| p.target.is_some()) {
        return Err(MetadataError::InvalidReplicationFactor(format!(
            "partition {topic}-{i} is being reassigned; change the replication factor once it is done"
        )));
    }
    let mut load: BTreeMap<i32, usize> = eligible.iter().map(|b| (b.id, 0)).collect();
    for p in state.topics.values().flat_map(|t| &t.partitions) {
        for r in &p.replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let rack_of = |id: i32| state.brokers.get(&id).and_then(|b| b.rack.clone());
    let mut moves = Vec::new();
    for (i, p) in t.partitions.iter().enumerate() {
        let mut target = p.replicas.clone();
        if target.len() > rf {
            target.truncate(rf);
            if p.leader >= 0 && p.replicas.contains(&p.leader) && !target.contains(&p.leader) {
                if let Some(last) = target.last_mut() {
                    *last = p.leader;
                }
            }
        }
        while target.len() < rf {
            let racks: BTreeSet<Option<String>> = target.iter().map(|r| rack_of(*r)).collect();
            let pick = load
                .iter()
                .filter(|(b, _)| !target.contains(b))
                .min_by_key(|(b, n)| (racks.contains(&rack_of(**b)), **n, **b))
                .map(|(b, _)| *b);
            let Some(b) = pick else {
                return Err(MetadataError::InvalidReplicationFactor(format!(
                    "replication factor {rf} is larger than the {} broker(s) that can hold a replica",
                    eligible.len()
                )));
            };
            target.push(b);
            if let Some(n) = load.get_mut(&b) {
                *n += 1;
            }
        }
        if target != p.replicas {
            moves.push((i as i32, target));
        }
    }
    Ok(moves)
}

/// The controller's reaction to missed heartbeats: fence brokers silent for longer
/// than `timeout_ms`, then move leadership of their partitions to another in-sync
/// replica (or mark them offline when none is left and unclean election is off).
pub fn fence_and_elect(state: &ClusterState, now_ms: i64, timeout_ms: i64) -> Vec<Command> {
    let mut cmds = Vec::new();
    let newly_fenced: BTreeSet<i32> = state
        .brokers
        .values()
        .filter(|b| b.status != BrokerStatus::Fenced && now_ms - b.last_heartbeat_ms > timeout_ms)
        .map(|b| b.id)
        .collect();
    for id in &newly_fenced {
        cmds.push(Command::FenceBroker {
            id: *id,
            last_heartbeat_ms: state.brokers.get(id).map(|b| b.last_heartbeat_ms),
        });
    }
    let dead = |b: i32| newly_fenced.contains(&b) || !state.is_live(b);
    for (name, t) in &state.topics {
        let unclean = t
            .record
            .configs
            .get("unclean.leader.election.enable")
            .map(String::as_str)
            == Some("true");
        for (i, p) in t.partitions.iter().enumerate() {
            if p.leader >= 0 && !dead(p.leader) {
                continue;
            }
            let candidate = p
                .replicas
                .iter()
                .copied()
                .find(|r| p.isr.contains(r) && !dead(*r))
                .or_else(|| {
                    if unclean {
                        p.replicas.iter().copied().find(|r| !dead(*r))
                    } else {
                        None
                    }
                });
            let leader = candidate.unwrap_or(-1);
            if leader != p.leader {
                cmds.push(Command::ElectLeader {
                    topic: name.clone(),
                    partition: i as i32,
                    leader,
                });
            }
        }
    }
    cmds
}

/// The controller's periodic work besides fencing: finish reassignments whose target
/// replicas are all in sync (first moving leadership into the target) and start
/// moving replicas off draining brokers. Preferred-leader elections are separate
/// ([`preferred_leader_elections`]): the controller runs those on its own schedule.
pub fn progress_actions(state: &ClusterState) -> Vec<Command> {
    let draining = |b: i32| state.brokers.get(&b).is_some_and(|x| x.draining);
    let usable = |b: i32| state.is_live(b) && !draining(b);
    let mut load: BTreeMap<i32, usize> = state
        .brokers
        .values()
        .filter(|b| usable(b.id))
        .map(|b| (b.id, 0))
        .collect();
    for t in state.topics.values() {
        for p in &t.partitions {
            for r in p.target.as_ref().unwrap_or(&p.replicas) {
                if let Some(n) = load.get_mut(r) {
                    *n += 1;
                }
            }
        }
    }
    let mut cmds = Vec::new();
    for (name, t) in &state.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            let partition = i as i32;
            let elect = |leader: i32| Command::ElectLeader {
                topic: name.clone(),
                partition,
                leader,
            };
            if let Some(target) = &p.target {
                if target.iter().all(|r| p.isr.contains(r)) {
                    if target.contains(&p.leader) {
                        cmds.push(Command::CompleteReassignment {
                            topic: name.clone(),
                            partition,
                        });
                    } else if let Some(l) = target.iter().copied().find(|r| state.is_live(*r)) {
                        cmds.push(elect(l));
                    }
                }
                continue;
            }
            let leaving: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| draining(*r))
                .collect();
            if !leaving.is_empty() {
                let mut target = p.replicas.clone();
                let mut ok = true;
                for r in leaving {
                    let pick = load
                        .iter()
                        .filter(|(b, _)| !target.contains(b))
                        .min_by_key(|(b, n)| (**n, **b))
                        .map(|(b, _)| *b);
                    match pick {
                        Some(b) => {
                            if let Some(slot) = target.iter_mut().find(|x| **x == r) {
                                *slot = b;
                            }
                            if let Some(n) = load.get_mut(&b) {
                                *n += 1;
                            }
                        }
                        None => ok = false,
                    }
                }
                if ok {
                    cmds.push(Command::Reassign {
                        topic: name.clone(),
                        partition,
                        target,
                    });
                } else if draining(p.leader) {
                    // Nowhere to move the replica: at least move leadership away.
                    if let Some(l) = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| p.isr.contains(r) && usable(*r))
                    {
                        cmds.push(elect(l));
                    }
                }
            }
        }
    }
    cmds
}

/// The elections that give leadership back to preferred (first) replicas: one for
/// every partition whose preferred replica is live, not draining, in the ISR and not
/// leading, and which is neither being reassigned nor losing a replica to a drain
/// (those move through [`progress_actions`]). Kafka's KRaft controller runs the same
/// check every `leader.imbalance.check.interval.seconds` once an imbalance exists.
pub fn preferred_leader_elections(state: &ClusterState) -> Vec<Command> {
    let draining = |b: i32| state.brokers.get(&b).is_some_and(|x| x.draining);
    let usable = |b: i32| state.is_live(b) && !draining(b);
    let mut cmds = Vec::new();
    for (name, t) in &state.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.target.is_some() || p.replicas.iter().any(|r| draining(*r)) {
                continue;
            }
            if let Some(&preferred) = p.replicas.first() {
                if preferred != p.leader && usable(preferred) && p.isr.contains(&preferred) {
                    cmds.push(Command::ElectLeader {
                        topic: name.clone(),
                        partition: i as i32,
                        leader: preferred,
                    });
                }
            }
        }
    }
    cmds
}
