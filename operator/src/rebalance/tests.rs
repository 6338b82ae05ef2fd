use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn broker(id: i32, rack: Option<&str>) -> Broker {
    Broker {
        id,
        rack: rack.map(str::to_string),
    }
}

fn brokers(ids: &[i32]) -> Vec<Broker> {
    ids.iter().map(|&id| broker(id, None)).collect()
}

fn part(topic: &str, partition: i32, replicas: &[i32]) -> PartitionReplicas {
    PartitionReplicas {
        topic: topic.to_string(),
        partition,
        replicas: replicas.to_vec(),
    }
}

const ALL: Policy = Policy {
    max_moves: usize::MAX,
};

fn apply(current: &[PartitionReplicas], moves: &[Move]) -> Vec<PartitionReplicas> {
    let mut next = current.to_vec();
    for m in moves {
        for p in next.iter_mut() {
            if p.topic == m.topic && p.partition == m.partition {
                p.replicas = m.replicas.clone();
            }
        }
    }
    next
}

/// Replicas (or preferred leaders) per eligible broker.
fn counts(
    current: &[PartitionReplicas],
    brokers: &[Broker],
    leaders_only: bool,
) -> BTreeMap<i32, usize> {
    let mut c: BTreeMap<i32, usize> = brokers.iter().map(|b| (b.id, 0)).collect();
    for p in current {
        let take = if leaders_only { 1 } else { p.replicas.len() };
        for id in p.replicas.iter().take(take) {
            if let Some(n) = c.get_mut(id) {
                *n += 1;
            }
        }
    }
    c
}

fn spread(c: &BTreeMap<i32, usize>) -> usize {
    let max = c.values().max().copied().unwrap_or(0);
    let min = c.values().min().copied().unwrap_or(0);
    max - min
}

/// Brokers added to partitions: the number of replicas that have to be copied.
fn replica_changes(current: &[PartitionReplicas], moves: &[Move]) -> usize {
    moves
        .iter()
        .map(|m| {
            let old = current
                .iter()
                .find(|p| p.topic == m.topic && p.partition == m.partition)
                .map(|p| p.replicas.clone())
                .unwrap_or_default();
            m.replicas.iter().filter(|id| !old.contains(id)).count()
        })
        .sum()
}

fn rack_diversity(replicas: &[i32], brokers: &[Broker]) -> usize {
    replicas
        .iter()
        .map(|id| {
            match brokers
                .iter()
                .find(|b| b.id == *id)
                .and_then(|b| b.rack.clone())
            {
                Some(r) => format!("rack:{r}"),
                None => format!("own:{id}"),
            }
        })
        .collect::<BTreeSet<_>>()
        .len()
}

/// Six partitions with RF 3 on brokers 1..=3.
fn three_broker_cluster() -> Vec<PartitionReplicas> {
    (0..6)
        .map(|p| {
            let r = [1, 2, 3];
            let k = p as usize % 3;
            part("orders", p, &[r[k], r[(k + 1) % 3], r[(k + 2) % 3]])
        })
        .collect()
}

#[test]
fn scale_out_spreads_with_minimal_moves() {
    let current = three_broker_cluster();
    let live = brokers(&[1, 2, 3, 4, 5]);
    let moves = plan(&current, &live, &ALL);
    // 18 replicas over 5 brokers: 3 or 4 each. Brokers 4 and 5 need 3 each
    // and brokers 1..=3 must shed 2 each: 6 replica copies is the minimum.
    assert_eq!(replica_changes(&current, &moves), 6);
    let next = apply(&current, &moves);
    let c = counts(&next, &live, false);
    assert!(c.values().all(|&n| n == 3 || n == 4), "{c:?}");
    assert!(spread(&counts(&next, &live, true)) <= 1);
    for m in &moves {
        assert_eq!(m.replicas.len(), 3);
        assert_eq!(m.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
    }
    assert!(
        plan(&next, &live, &ALL).is_empty(),
        "replanning must be a no-op"
    );
}

#[test]
fn balanced_cluster_gets_no_moves() {
    let current = three_broker_cluster();
    assert!(plan(&current, &brokers(&[1, 2, 3]), &ALL).is_empty());
}

#[test]
fn draining_broker_is_emptied_in_place() {
    // Broker 4 is draining: not eligible any more.
    let current = vec![
        part("t", 0, &[4, 1]),
        part("t", 1, &[1, 4]),
        part("t", 2, &[2, 3]),
        part("t", 3, &[3, 2]),
    ];
    let live = brokers(&[1, 2, 3]);
    let moves = plan(&current, &live, &ALL);
    let next = apply(&current, &moves);
    assert!(next.iter().all(|p| !p.replicas.contains(&4)));
    // The surviving replica keeps its position; the replacement takes broker 4's.
    assert_eq!(next[0].replicas[1], 1);
    assert_eq!(next[1].replicas[0], 1);
    assert_eq!(replica_changes(&current, &moves), 2);
    assert!(spread(&counts(&next, &live, false)) <= 1);
    assert!(plan(&next, &live, &ALL).is_empty());
}

#[test]
fn evacuation_comes_first_under_max_moves() {
    let mut current = three_broker_cluster();
    current.push(part("z", 0, &[9, 1, 2]));
    let live = brokers(&[1, 2, 3, 4, 5]);
    let moves = plan(&current, &live, &Policy { max_moves: 1 });
    assert_eq!(moves.len(), 1);
    assert_eq!((moves[0].topic.as_str(), moves[0].partition), ("z", 0));
    assert!(!moves[0].replicas.contains(&9));
    assert_eq!(moves[0].replicas.len(), 3);
}

#[test]
fn replacement_prefers_a_new_rack() {
    // Broker 3 (rack b) is busier than broker 2 (rack a), but partition t-0
    // already has rack a through broker 1.
    let live = vec![
        broker(1, Some("a")),
        broker(2, Some("a")),
        broker(3, Some("b")),
    ];
    let current = vec![part("t", 0, &[1, 7]), part("u", 0, &[3])];
    let moves = plan(&current, &live, &ALL);
    let next = apply(&current, &moves);
    assert_eq!(next[0].replicas, vec![1, 3]);
}

#[test]
fn balancing_never_lowers_rack_diversity() {
    // Rack b has one broker, so it must keep one replica of every partition.
    let live = vec![
        broker(1, Some("a")),
        broker(2, Some("b")),
        broker(3, Some("a")),
    ];
    let current: Vec<_> = (0..4)
        .map(|p| part("t", p, if p % 2 == 0 { &[1, 2] } else { &[2, 1] }))
        .collect();
    let moves = plan(&current, &live, &ALL);
    let next = apply(&current, &moves);
    for p in &next {
        assert!(p.replicas.contains(&2), "{p:?}");
        assert_eq!(rack_diversity(&p.replicas, &live), 2);
    }
    let c = counts(&next, &live, false);
    assert_eq!((c[&1], c[&2], c[&3]), (2, 4, 2));
    assert!(plan(&next, &live, &ALL).is_empty());
}

#[test]
fn leaders_are_balanced_by_reordering_only() {
    // Replicas are even, but broker 1 is preferred leader everywhere.
    let current: Vec<_> = (0..3)
        .map(|p| part("t", p, &[1, 2, 3]))
        .chain((3..6).map(|p| part("t", p, &[1, 3, 2])))
        .collect();
    let live = brokers(&[1, 2, 3]);
    let moves = plan(&current, &live, &ALL);
    assert_eq!(replica_changes(&current, &moves), 0);
    // 6 leaders on 3 brokers: 4 reorders bring broker 1 from 6 to 2.
    assert_eq!(moves.len(), 4);
    let next = apply(&current, &moves);
    assert!(counts(&next, &live, true).values().all(|&n| n == 2));
    assert!(plan(&next, &live, &ALL).is_empty());
}

#[test]
fn degenerate_inputs() {
    let current = three_broker_cluster();
    assert!(plan(&current, &[], &ALL).is_empty());
    assert!(plan(&[], &brokers(&[1, 2]), &ALL).is_empty());
    assert!(plan(&current, &brokers(&[1, 2, 3, 4]), &Policy { max_moves: 0 }).is_empty());
    // RF 3 on two eligible brokers cannot be fixed: left as is, no panic.
    let moves = plan(
        &[part("t", 0, &[1, 2, 3]), part("t", 1, &[])],
        &brokers(&[1, 2]),
        &ALL,
    );
    assert!(moves.is_empty());
}

#[test]
fn duplicate_replica_entries_are_replaced() {
    let live = brokers(&[1, 2, 3]);
    let current = vec![part("t", 0, &[1, 1, 2])];
    let moves = plan(&current, &live, &ALL);
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].replicas, vec![1, 3, 2]);
}

#[test]
fn deterministic_regardless_of_input_order() {
    let current = three_broker_cluster();
    let live = brokers(&[1, 2, 3, 4, 5]);
    let mut shuffled = current.clone();
    shuffled.reverse();
    let mut live_rev = live.clone();
    live_rev.reverse();
    let a = plan(&current, &live, &ALL);
    assert_eq!(a, plan(&current, &live, &ALL));
    assert_eq!(a, plan(&shuffled, &live_rev, &ALL));
}

/// A random cluster: eligible brokers 1..=n (optionally with racks), brokers
/// n+1..=n+gone ineligible, and partitions with RF <= min(3, n) placed
/// anywhere on all of them.
fn cluster() -> impl Strategy<Value = (Vec<Broker>, Vec<PartitionReplicas>)> {
    (2..=7i32, 0..=2i32, any::<bool>()).prop_flat_map(|(n, gone, with_racks)| {
        let all: Vec<i32> = (1..=n + gone).collect();
        let rf_max = n.min(3) as usize;
        let parts = prop::collection::vec(
            (1..=rf_max)
                .prop_flat_map(move |rf| prop::sample::subsequence(all.clone(), rf).prop_shuffle()),
            1..=40,
        );
        let racks = prop::collection::vec(0..3u8, n as usize);
        (parts, racks).prop_map(move |(parts, racks)| {
            let live = (1..=n)
                .zip(racks)
                .map(|(id, r)| Broker {
                    id,
                    rack: with_racks.then(|| format!("r{r}")),
                })
                .collect();
            let current = parts
                .into_iter()
                .enumerate()
                .map(|(i, replicas)| PartitionReplicas {
                    topic: format!("t{}", i % 3),
                    partition: i as i32,
                    replicas,
                })
                .collect();
            (live, current)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_are_valid_balanced_minimal_and_stable((live, current) in cluster()) {
        let eligible: BTreeSet<i32> = live.iter().map(|b| b.id).collect();
        let moves = plan(&current, &live, &ALL);

        // Every move is valid and names a distinct partition.
        let mut seen = BTreeSet::new();
        for m in &moves {
            prop_assert!(seen.insert((m.topic.clone(), m.partition)));
            let old = current.iter().find(|p| p.topic == m.topic && p.partition == m.partition);
            prop_assert!(old.is_some());
            let old = old.map(|p| p.replicas.clone()).unwrap_or_default();
            prop_assert_eq!(m.replicas.len(), old.len());
            prop_assert_ne!(&m.replicas, &old);
            prop_assert_eq!(m.replicas.iter().collect::<BTreeSet<_>>().len(), m.replicas.len());
            prop_assert!(m.replicas.iter().all(|id| eligible.contains(id)));
            // Rack diversity never drops (only measurable when no replica
            // was on an ineligible broker of unknown rack).
            if old.iter().all(|id| eligible.contains(id)) {
                prop_assert!(rack_diversity(&m.replicas, &live) >= rack_diversity(&old, &live));
            }
        }

        // Replica-change bound. With T all replicas, floor/ceil = T/N rounded,
        // X the replicas on ineligible brokers, and on eligible brokers
        // A = Σ max(0, c − ceil), B = Σ max(0, floor − c):
        // - lower bound max(X + A, B): each ineligible replica and each
        //   replica above ceil must leave, each slot below floor must be filled;
        // - upper bound X + max(A + X, B): evacuation makes X changes and can
        //   raise A by at most X (when the only free brokers are at ceil),
        //   never raises B; each balancing move lowers max(A, B) by one
        //   (without racks it always can) or, when racks block that, lowers
        //   A or B by one, so with racks the bound is X + (A + X) + B.
        let total: usize = current.iter().map(|p| p.replicas.len()).sum();
        let n = live.len();
        let (floor, ceil) = (total / n, total.div_ceil(n));
        let c0 = counts(&current, &live, false);
        let x = total - c0.values().sum::<usize>();
        let a: usize = c0.values().map(|&c| c.saturating_sub(ceil)).sum();
        let b: usize = c0.values().map(|&c| floor.saturating_sub(c)).sum();
        let changes = replica_changes(&current, &moves);
        let no_racks = live.iter().all(|b| b.rack.is_none());
        let bound = if no_racks { x + (a + x).max(b) } else { x + (a + x) + b };
        prop_assert!(changes <= bound, "changes {} x {} a {} b {}", changes, x, a, b);
        if no_racks && x == 0 {
            // Optimal: exactly the lower bound.
            prop_assert_eq!(changes, a.max(b));
        }

        let next = apply(&current, &moves);
        prop_assert!(next.iter().all(|p| p.replicas.iter().all(|id| eligible.contains(id))));
        // Racks constrain nothing when they are all distinct or all equal
        // (every move keeps diversity), so ±1 is reachable then too.
        let distinct_racks = live.iter().map(|b| b.rack.clone()).collect::<BTreeSet<_>>().len();
        if no_racks || distinct_racks == 1 || distinct_racks == live.len() {
            let c = counts(&next, &live, false);
            prop_assert!(spread(&c) <= 1, "unbalanced {:?}", c);
            if x == 0 {
                prop_assert!(changes >= (x + a).max(b));
            }
        }

        // No leadership can move directly from a broker leading two more.
        let l = counts(&next, &live, true);
        for p in &next {
            for f in &p.replicas[1..] {
                prop_assert!(l[&p.replicas[0]] < l[f] + 2, "leaders {:?} at {:?}", l, p);
            }
        }

        // Stable: replanning a fully applied plan is a no-op.
        prop_assert!(plan(&next, &live, &ALL).is_empty());
    }

    #[test]
    fn bounded_plans_converge((live, current) in cluster(), max_moves in 1..4usize) {
        let policy = Policy { max_moves };
        let mut state = current.clone();
        let mut rounds = 0;
        loop {
            let moves = plan(&state, &live, &policy);
            prop_assert!(moves.len() <= max_moves);
            if moves.is_empty() {
                break;
            }
            state = apply(&state, &moves);
            rounds += 1;
            prop_assert!(rounds <= 200, "no convergence");
        }
        let eligible: BTreeSet<i32> = live.iter().map(|b| b.id).collect();
        prop_assert!(state.iter().all(|p| p.replicas.iter().all(|id| eligible.contains(id))));
        if live.iter().all(|b| b.rack.is_none()) {
            prop_assert!(spread(&counts(&state, &live, false)) <= 1);
        }
    }
}

#[test]
fn large_scale_out_is_quick() {
    // 2400 partitions with RF 3 on 24 brokers (racks r0..r2), scaled to 30.
    let racked = |ids: std::ops::RangeInclusive<i32>| -> Vec<Broker> {
        ids.map(|id| broker(id, Some(["r0", "r1", "r2"][id as usize % 3])))
            .collect()
    };
    let current: Vec<_> = (0..2400)
        .map(|p| {
            let b = p % 24;
            part("big", p, &[b + 1, (b + 8) % 24 + 1, (b + 16) % 24 + 1])
        })
        .collect();
    let live = racked(1..=30);
    let started = std::time::Instant::now();
    let moves = plan(&current, &live, &ALL);
    let next = apply(&current, &moves);
    assert!(spread(&counts(&next, &live, false)) <= 1);
    assert!(spread(&counts(&next, &live, true)) <= 1);
    assert!(plan(&next, &live, &ALL).is_empty());
    // Every moved partition keeps a replica to copy from.
    for m in &moves {
        let old = &current[m.partition as usize].replicas;
        assert!(m.replicas.iter().any(|id| old.contains(id)), "{m:?}");
    }
    eprintln!(
        "{} moves, {} replica changes in {:?}",
        moves.len(),
        replica_changes(&current, &moves),
        started.elapsed()
    );
}

#[test]
fn scale_out_gives_the_new_broker_its_share_of_every_topic() {
    // The shape of bench/scale_out.sh: 50 `__consumer_offsets` partitions sort
    // before a 12-partition data topic; a count-only balance would hand the new
    // broker offsets partitions alone and none of the data topic's traffic.
    let mut current = Vec::new();
    for p in 0..50 {
        let r = [p % 3, (p + 1) % 3, (p + 2) % 3].map(|b| b + 1);
        current.push(part("__consumer_offsets", p, &r));
    }
    for p in 0..12 {
        let r = [p % 3, (p + 1) % 3, (p + 2) % 3].map(|b| b + 1);
        current.push(part("history", p, &r));
    }
    let live = brokers(&[1, 2, 3, 4]);
    let moves = plan(&current, &live, &ALL);
    let next = apply(&current, &moves);
    let on_new = |topic: &str| {
        next.iter()
            .filter(|p| p.topic == topic && p.replicas.contains(&4))
            .count()
    };
    // 36 replicas of history over 4 brokers: 9 each; within one of it.
    assert!(
        (8..=10).contains(&on_new("history")),
        "{}",
        on_new("history")
    );
    assert!(
        (35..=40).contains(&on_new("__consumer_offsets")),
        "{}",
        on_new("__consumer_offsets")
    );
    // Still the fewest replica copies: 186 replicas over 4 brokers (46 or 47 each).
    assert_eq!(replica_changes(&current, &moves), 46);
    assert!(
        plan(&next, &live, &ALL).is_empty(),
        "replanning must be a no-op"
    );
}
