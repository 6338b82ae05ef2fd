//! The rebalance planner: a pure function from the current replica
//! assignment and the set of eligible brokers to a bounded list of partition
//! moves.
//!
//! It sits between the Cluster controller and the broker admin API: on
//! scale-out (new, empty brokers), scale-in (draining brokers) or a dead
//! broker, the controller reads the assignment, calls [`plan`], submits the
//! returned [`Move`]s and calls [`plan`] again once they have finished, until
//! it returns nothing. There is no I/O here and no state between calls, so
//! everything is deterministic and tested with plain unit and property tests.
//!
//! The plan runs three phases on a working copy of the assignment:
//!
//! 1. **Evacuate**: every replica on a broker that is not eligible (draining,
//!    gone, or a duplicate entry in the list) is replaced, in the same
//!    position, by an eligible broker not yet in the partition, preferring a
//!    rack new to the partition, then the least-loaded broker.
//! 2. **Replica balance**: while replica counts differ by more than one,
//!    move one replica from an over-loaded broker to an under-loaded one.
//!    With `floor`/`ceil` the ideal counts, `A = Σ max(0, count − ceil)` and
//!    `B = Σ max(0, floor − count)`, each move lowers `max(A, B)` by one and
//!    raises neither; since no plan can lower either by more than one per
//!    replica moved, this phase is optimal in replica moves (see the tests
//!    for the bound). A move never lowers the partition's rack diversity;
//!    when that blocks every such move, a move that lowers `A` or `B` alone
//!    is taken instead, and the phase stops when none is left (racks can
//!    make ±1 unreachable, e.g. a rack with a single broker).
//! 3. **Leader balance**: while some broker leads at least two partitions
//!    more than another, shift preferred leadership along the shortest chain
//!    of partitions (reordering replica lists only, no data moves) from the
//!    most-leading broker to a broker that leads fewer.
//!
//! Within phase 2 a follower replica is moved rather than the preferred
//! leader (unless the leader's broker also leads too many), and partitions
//! already being moved are preferred as long as one original replica stays;
//! then the partition of the topic most over-represented on the source
//! relative to the target, as a share of the topic's replicas, so that each
//! topic ends up spread over the brokers too (a new broker gets its share of
//! every topic's traffic, not just of the cheapest partitions to move).
//! Partitions whose replication factor exceeds the number of eligible brokers
//! (or that have no replicas) are left untouched but still count as load.
//!
//! Cost is roughly O(moves × P × RF) in the common case (P partitions); rack
//! constraints that block the most loaded pair make it scan more pairs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A live, non-draining broker that may hold replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Broker id.
    pub id: i32,
    /// Rack (failure domain) of the broker, if racks are configured.
    pub rack: Option<String>,
}

/// The current replica list of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Broker ids holding a replica; `replicas[0]` is the preferred leader.
    pub replicas: Vec<i32>,
}

/// A planned change of one partition's replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The target replica list, preferred leader first. Same length as the
    /// current list, no duplicates, eligible brokers only.
    pub replicas: Vec<i32>,
}

/// Limits on one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// At most this many partition moves per plan; the operator replans after
    /// they finish.
    pub max_moves: usize,
}

/// Computes the moves that bring `current` towards an even, rack-aware spread
/// over `brokers` (see the module documentation for the phases).
///
/// The result is ordered by value: partitions with replicas on ineligible
/// brokers first, then replica moves from the most loaded brokers, then
/// leader-only reorders; it is cut to `policy.max_moves` entries. Applying a
/// full plan and planning again returns no moves.
pub fn plan(current: &[PartitionReplicas], brokers: &[Broker], policy: &Policy) -> Vec<Move> {
    if brokers.is_empty() || current.is_empty() || policy.max_moves == 0 {
        return Vec::new();
    }
    let mut state = State::new(current, brokers);
    state.evacuate();
    state.balance_replicas();
    state.balance_leaders();
    state.into_moves(policy.max_moves)
}

/// Rack identity used for diversity: a named rack, or a broker of its own
/// (no rack configured, or not eligible so its rack is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RackKey<'a> {
    Rack(&'a str),
    Own(i32),
}

/// One partition in the working copy.
#[derive(Debug)]
struct Part {
    topic: String,
    /// Index of the topic in `State::topic_count`.
    topic_idx: usize,
    partition: i32,
    original: Vec<i32>,
    replicas: Vec<i32>,
    /// False when the partition cannot be fixed (RF > eligible brokers, or
    /// no replicas); such a partition is never changed.
    movable: bool,
    /// Order in which the plan first touched this partition.
    touched: Option<usize>,
}

/// The working copy of the assignment plus per-broker load.
struct State<'a> {
    /// Eligible broker ids, ascending.
    ids: Vec<i32>,
    /// Broker id → index into `ids`.
    index: BTreeMap<i32, usize>,
    racks: Vec<Option<&'a str>>,
    parts: Vec<Part>,
    /// Replicas per eligible broker.
    count: Vec<usize>,
    /// Preferred leaderships per eligible broker.
    leaders: Vec<usize>,
    /// Per topic: replicas per eligible broker, and all its replicas.
    topic_count: Vec<(Vec<usize>, usize)>,
    next_touch: usize,
}

impl<'a> State<'a> {
    fn new(current: &[PartitionReplicas], brokers: &'a [Broker]) -> Self {
        let mut by_id: BTreeMap<i32, Option<&'a str>> = BTreeMap::new();
        for b in brokers {
            by_id.entry(b.id).or_insert(b.rack.as_deref());
        }
        let ids: Vec<i32> = by_id.keys().copied().collect();
        let racks: Vec<Option<&'a str>> = by_id.values().copied().collect();
        let index: BTreeMap<i32, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();

        let topics: BTreeMap<&str, usize> = current
            .iter()
            .map(|p| p.topic.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i))
            .collect();
        let mut parts: Vec<Part> = current
            .iter()
            .map(|p| Part {
                topic: p.topic.clone(),
                topic_idx: topics.get(p.topic.as_str()).copied().unwrap_or(0),
                partition: p.partition,
                original: p.replicas.clone(),
                replicas: p.replicas.clone(),
                movable: !p.replicas.is_empty() && p.replicas.len() <= ids.len(),
                touched: None,
            })
            .collect();
        parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));

        let mut state = State {
            count: vec![0; ids.len()],
            leaders: vec![0; ids.len()],
            topic_count: vec![(vec![0; ids.len()], 0); topics.len()],
            ids,
            index,
            racks,
            parts,
            next_touch: 0,
        };
        for p in 0..state.parts.len() {
            for slot in 0..state.parts[p].replicas.len() {
                if let Some(b) = state.good_at(p, slot) {
                    state.count[b] += 1;
                    if slot == 0 {
                        state.leaders[b] += 1;
                    }
                    let t = state.parts[p].topic_idx;
                    state.topic_count[t].0[b] += 1;
                }
                let t = state.parts[p].topic_idx;
                state.topic_count[t].1 += 1;
            }
        }
        state
    }

    /// The eligible broker index at `slot` of partition `p`, or `None` when the
    /// broker is ineligible or repeats an earlier entry of the list.
    fn good_at(&self, p: usize, slot: usize) -> Option<usize> {
        let replicas = &self.parts[p].replicas;
        let id = replicas[slot];
        if replicas[..slot].contains(&id) {
            return None;
        }
        self.index.get(&id).copied()
    }

    fn rack_key(&self, id: i32) -> RackKey<'a> {
        match self.index.get(&id).and_then(|&i| self.racks[i]) {
            Some(rack) => RackKey::Rack(rack),
            None => RackKey::Own(id),
        }
    }

    /// Number of distinct racks among `replicas`.
    fn diversity(&self, replicas: &[i32]) -> usize {
        replicas
            .iter()
            .map(|&id| self.rack_key(id))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Diversity of partition `p` with `slot` replaced by broker `id`.
    fn diversity_with(&self, p: usize, slot: usize, id: i32) -> usize {
        let mut replicas = self.parts[p].replicas.clone();
        replicas[slot] = id;
        self.diversity(&replicas)
    }

    fn touch(&mut self, p: usize) {
        if self.parts[p].touched.is_none() {
            self.parts[p].touched = Some(self.next_touch);
            self.next_touch += 1;
        }
    }

    /// Puts eligible broker index `to` at `slot` of partition `p`, updating loads.
    fn replace(&mut self, p: usize, slot: usize, to: usize) {
        let t = self.parts[p].topic_idx;
        if let Some(from) = self.good_at(p, slot) {
            self.count[from] -= 1;
            self.topic_count[t].0[from] -= 1;
            if slot == 0 {
                self.leaders[from] -= 1;
            }
        }
        self.parts[p].replicas[slot] = self.ids[to];
        self.count[to] += 1;
        self.topic_count[t].0[to] += 1;
        if slot == 0 {
            self.leaders[to] += 1;
        }
        self.touch(p);
    }

    /// Phase 1: replace replicas on ineligible brokers (and duplicate entries).
    fn evacuate(&mut self) {
        for p in 0..self.parts.len() {
            if !self.parts[p].movable {
                continue;
            }
            for slot in 0..self.parts[p].replicas.len() {
                if self.good_at(p, slot).is_some() {
                    continue;
                }
                let replicas = &self.parts[p].replicas;
                let best = (0..self.ids.len())
                    .filter(|&b| !replicas.contains(&self.ids[b]))
                    .min_by_key(|&b| {
                        let leader_load = if slot == 0 { self.leaders[b] } else { 0 };
                        (
                            std::cmp::Reverse(self.diversity_with(p, slot, self.ids[b])),
                            self.count[b],
                            leader_load,
                            b,
                        )
                    });
                // RF <= eligible brokers, so a free broker always exists.
                if let Some(to) = best {
                    self.replace(p, slot, to);
                }
            }
        }
    }

    /// Phase 2: move replicas from over-loaded to under-loaded brokers.
    fn balance_replicas(&mut self) {
        let n = self.ids.len();
        let total: usize = self.count.iter().sum();
        let floor = total / n;
        let ceil = total.div_ceil(n);
        loop {
            let excess: usize = self.count.iter().map(|&c| c.saturating_sub(ceil)).sum();
            let deficit: usize = self.count.iter().map(|&c| floor.saturating_sub(c)).sum();
            if excess == 0 && deficit == 0 {
                return;
            }
            let mut sources: Vec<usize> = (0..n).collect();
            sources.sort_by_key(|&b| (std::cmp::Reverse(self.count[b]), b));
            let mut targets: Vec<usize> = (0..n).collect();
            targets.sort_by_key(|&b| (self.count[b], b));

            // Strict moves lower max(A, B); when rack constraints block them
            // all, a move that lowers A or B (and raises neither) still helps.
            let mut chosen = None;
            'passes: for strict in [true, false] {
                for &s in &sources {
                    let cs = self.count[s];
                    // The source stays at or above floor.
                    if cs < floor + 1 || (strict && excess >= deficit && cs <= ceil) {
                        continue;
                    }
                    for &t in &targets {
                        let ct = self.count[t];
                        // The target stays at or below ceil; one end must be out of range.
                        if ct + 2 > cs || ct + 1 > ceil || (cs <= ceil && ct >= floor) {
                            continue;
                        }
                        if strict && deficit >= excess && ct >= floor {
                            continue;
                        }
                        if let Some((p, slot)) = self.best_replica_move(s, t) {
                            chosen = Some((p, slot, t));
                            break 'passes;
                        }
                    }
                }
            }
            match chosen {
                Some((p, slot, t)) => self.replace(p, slot, t),
                None => return,
            }
        }
    }

    /// The partition and slot to move from broker index `s` to `t`, if any
    /// partition on `s` lacks `t` and would keep its rack diversity.
    fn best_replica_move(&self, s: usize, t: usize) -> Option<(usize, usize)> {
        let (sid, tid) = (self.ids[s], self.ids[t]);
        let leader_helps = self.leaders[s] > self.leaders[t] + 1;
        (0..self.parts.len())
            .filter(|&p| self.parts[p].movable && !self.parts[p].replicas.contains(&tid))
            .filter_map(|p| {
                let slot = self.parts[p].replicas.iter().position(|&r| r == sid)?;
                let before = self.diversity(&self.parts[p].replicas);
                (self.diversity_with(p, slot, tid) >= before).then_some((p, slot))
            })
            .min_by_key(|&(p, slot)| {
                // Follower slots first, unless moving leadership helps too.
                let leader_rank = match (slot == 0, leader_helps) {
                    (true, true) => 0,
                    (false, _) => 1,
                    (true, false) => 2,
                };
                // Then partitions already being moved (fewer moves), as long
                // as one original replica stays to copy from; never-touched
                // partitions next; replacing a partition's last original last.
                let part = &self.parts[p];
                let originals_left = part
                    .replicas
                    .iter()
                    .filter(|&&r| r != sid && part.original.contains(&r))
                    .count();
                let touch_rank = match (part.touched.is_some(), originals_left > 0) {
                    (true, true) => 0,
                    (false, _) => 1,
                    (true, false) => 2,
                };
                // Then the topic most over-represented on `s` against `t`, as a
                // share of its replicas (parts per million, so a key can hold it).
                let (on, total) = &self.topic_count[part.topic_idx];
                let surplus = on[s] as i64 - on[t] as i64;
                let share = surplus * 1_000_000 / (*total).max(1) as i64;
                (leader_rank, touch_rank, std::cmp::Reverse(share), p)
            })
    }

    /// Phase 3: even out preferred leaders by reordering replica lists.
    fn balance_leaders(&mut self) {
        let n = self.ids.len();
        loop {
            let Some(min_leaders) = self.leaders.iter().copied().min() else {
                return;
            };
            // Edges x -> (y, partition, slot): partition led by x that has y as
            // a follower. Already-touched partitions first (no extra move).
            let mut edges: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); n];
            for (p, part) in self.parts.iter().enumerate() {
                if !part.movable {
                    continue;
                }
                let Some(&x) = part.replicas.first().and_then(|id| self.index.get(id)) else {
                    continue;
                };
                for (slot, id) in part.replicas.iter().enumerate().skip(1) {
                    if let Some(&y) = self.index.get(id) {
                        edges[x].push((y, p, slot));
                    }
                }
            }
            for list in &mut edges {
                list.sort_by_key(|&(y, p, slot)| (self.parts[p].touched.is_none(), p, slot, y));
            }

            let mut sources: Vec<usize> = (0..n).collect();
            sources.sort_by_key(|&b| (std::cmp::Reverse(self.leaders[b]), b));
            let mut path = None;
            for &s in &sources {
                if self.leaders[s] < min_leaders + 2 {
                    break;
                }
                if let Some(found) = self.leader_path(s, &edges) {
                    path = Some(found);
                    break;
                }
            }
            let Some(path) = path else {
                return;
            };
            for (p, slot) in path {
                self.parts[p].replicas.swap(0, slot);
                self.touch(p);
            }
            // Along the chain only the two ends change their leader count.
            self.recount_leaders();
        }
    }

    /// Breadth-first search from broker index `s` for the broker leading the
    /// fewest partitions (at least two fewer than `s`) reachable through
    /// leader → follower edges; returns the (partition, slot) swaps to apply.
    fn leader_path(
        &self,
        s: usize,
        edges: &[Vec<(usize, usize, usize)>],
    ) -> Option<Vec<(usize, usize)>> {
        let n = self.ids.len();
        let mut via: Vec<Option<(usize, usize, usize)>> = vec![None; n];
        let mut dist: Vec<Option<usize>> = vec![None; n];
        dist[s] = Some(0);
        let mut queue = VecDeque::from([s]);
        while let Some(x) = queue.pop_front() {
            let d = dist[x].unwrap_or(0);
            for &(y, p, slot) in &edges[x] {
                if dist[y].is_none() {
                    dist[y] = Some(d + 1);
                    via[y] = Some((x, p, slot));
                    queue.push_back(y);
                }
            }
        }
        let target = (0..n)
            .filter(|&t| t != s && dist[t].is_some() && self.leaders[t] + 2 <= self.leaders[s])
            .min_by_key(|&t| (self.leaders[t], dist[t], t))?;
        let mut path = Vec::new();
        let mut at = target;
        while let Some((prev, p, slot)) = via[at] {
            path.push((p, slot));
            at = prev;
        }
        path.reverse();
        Some(path)
    }

    fn recount_leaders(&mut self) {
        self.leaders.iter_mut().for_each(|l| *l = 0);
        for p in 0..self.parts.len() {
            if !self.parts[p].replicas.is_empty() {
                if let Some(b) = self.good_at(p, 0) {
                    self.leaders[b] += 1;
                }
            }
        }
    }

    fn into_moves(self, max_moves: usize) -> Vec<Move> {
        let mut changed: Vec<(usize, Part)> = self
            .parts
            .into_iter()
            .filter(|part| part.replicas != part.original)
            .filter_map(|part| part.touched.map(|t| (t, part)))
            .collect();
        changed.sort_by_key(|(t, _)| *t);
        changed
            .into_iter()
            .take(max_moves)
            .map(|(_, part)| Move {
                topic: part.topic,
                partition: part.partition,
                replicas: part.replicas,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
