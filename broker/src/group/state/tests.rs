use super::*;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn req(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        member_id: member.into(),
        instance_id: instance.map(String::from),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        require_known_member_id: false,
    }
}

fn now<T: std::fmt::Debug>(r: Reply<T>) -> T {
    match r {
        Reply::Now(t) => t,
        Reply::Wait(_) => panic!("expected an immediate answer"),
    }
}

fn waiting<T>(r: Reply<T>) -> oneshot::Receiver<T> {
    match r {
        Reply::Wait(rx) => rx,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

/// Joins `n` fresh members and completes the round; returns their join results.
fn form(g: &mut Group, n: usize, t: i64) -> Vec<JoinResult> {
    let mut rxs: Vec<_> = (0..n).map(|_| waiting(g.join(req("", None), t))).collect();
    // With everyone joined in one round the last join completes it.
    rxs.iter_mut()
        .map(|rx| rx.try_recv().expect("join completed"))
        .collect()
}

fn sync_all(g: &mut Group, results: &[JoinResult], t: i64) {
    let leader = results[0].leader.clone();
    let assignments: Vec<(String, Bytes)> = results
        .iter()
        .map(|r| {
            (
                r.member_id.clone(),
                Bytes::from(format!("for-{}", r.member_id)),
            )
        })
        .collect();
    let mut rxs = Vec::new();
    for r in results.iter().filter(|r| r.member_id != leader) {
        rxs.push(waiting(g.sync(&r.member_id, None, r.generation, vec![], t)));
    }
    let mut lrx = waiting(g.sync(&leader, None, results[0].generation, assignments, t));
    assert_eq!(
        lrx.try_recv().unwrap().assignment,
        Bytes::from(format!("for-{leader}"))
    );
    for mut rx in rxs {
        assert!(rx.try_recv().unwrap().assignment.starts_with(b"for-"));
    }
}

#[test]
fn first_members_form_a_generation_and_leader_gets_the_member_list() {
    let mut g = Group::new("g", cfg());
    // The first join completes immediately (only member); the others trigger rounds.
    let mut rx = waiting(g.join(req("", None), 0));
    let r1 = rx.try_recv().unwrap();
    assert_eq!(r1.generation, 1);
    assert_eq!(r1.leader, r1.member_id);
    assert_eq!(r1.members.len(), 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    sync_all(&mut g, std::slice::from_ref(&r1), 0);
    assert_eq!(g.state(), GroupState::Stable);
    // A second member joins: the first learns through its heartbeat and rejoins.
    let mut rx2 = waiting(g.join(req("", None), 1));
    assert!(rx2.try_recv().is_err());
    assert_eq!(
        g.heartbeat(&r1.member_id, None, 1, 1),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut rx1 = waiting(g.join(req(&r1.member_id, None), 2));
    let (a, b) = (rx1.try_recv().unwrap(), rx2.try_recv().unwrap());
    assert_eq!((a.generation, b.generation), (2, 2));
    assert_eq!(a.leader, r1.member_id, "the leader stays");
    assert_eq!(a.members.len(), 2);
    assert!(b.members.is_empty(), "followers get no member list");
    sync_all(&mut g, &[a, b], 3);
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn silent_member_is_expired_after_its_session_timeout() {
    let mut g = Group::new("g", cfg());
    let mut rx = waiting(g.join(req("", None), 0));
    let a = rx.try_recv().unwrap();
    sync_all(&mut g, std::slice::from_ref(&a), 0);
    let mut rxb = waiting(g.join(req("", None), 100));
    let mut rxa = waiting(g.join(req(&a.member_id, None), 100));
    let (a, b) = (rxa.try_recv().unwrap(), rxb.try_recv().unwrap());
    sync_all(&mut g, &[a.clone(), b.clone()], 100);
    // `a` keeps heartbeating, `b` goes silent.
    for t in (1_000..=10_000).step_by(1_000) {
        assert_eq!(g.heartbeat(&a.member_id, None, a.generation, t), None);
        assert!(g.tick(t).is_empty());
    }
    assert_eq!(g.tick(10_200), vec![b.member_id.clone()]);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let mut rx = waiting(g.join(req(&a.member_id, None), 10_300));
    let r = rx.try_recv().unwrap();
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.generation, a.generation + 1);
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_deadline() {
    let mut g = Group::new("g", cfg());
    let mut rx = waiting(g.join(req("", None), 0));
    let a = rx.try_recv().unwrap();
    sync_all(&mut g, &[a], 0);
    let mut rxb = waiting(g.join(req("", None), 10));
    assert!(rxb.try_recv().is_err());
    g.tick(10 + 30_001);
    let b = rxb.try_recv().unwrap();
    assert_eq!(b.members.len(), 1);
    assert_eq!(b.leader, b.member_id);
}

#[test]
fn static_member_restart_keeps_its_assignment_without_rebalance() {
    let mut g = Group::new("g", cfg());
    let mut rxa = waiting(g.join(req("", Some("inst-a")), 0));
    let a = rxa.try_recv().unwrap();
    sync_all(&mut g, std::slice::from_ref(&a), 0);
    let mut rxb = waiting(g.join(req("", Some("inst-b")), 1));
    let mut rxa = waiting(g.join(req(&a.member_id, Some("inst-a")), 1));
    let (a, b) = (rxa.try_recv().unwrap(), rxb.try_recv().unwrap());
    sync_all(&mut g, &[a.clone(), b.clone()], 1);
    let generation = g.generation();
    // inst-b restarts (new process, no member id) within its session timeout.
    let b2 = now(g.join(req("", Some("inst-b")), 5_000));
    assert_eq!(b2.generation, generation);
    assert_ne!(b2.member_id, b.member_id);
    assert_eq!(g.state(), GroupState::Stable);
    let s = now(g.sync(&b2.member_id, Some("inst-b"), generation, vec![], 5_001));
    assert_eq!(s.assignment, Bytes::from(format!("for-{}", b.member_id)));
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat(&b.member_id, Some("inst-b"), generation, 5_002),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        g.heartbeat(&a.member_id, Some("inst-a"), generation, 5_002),
        None
    );
}

#[test]
fn unknown_members_must_fetch_an_id_first_when_required() {
    let mut g = Group::new("g", cfg());
    let mut r = req("", None);
    r.require_known_member_id = true;
    let first = now(g.join(r.clone(), 0));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    assert!(!first.member_id.is_empty());
    r.member_id = first.member_id.clone();
    let mut rx = waiting(g.join(r.clone(), 1));
    assert_eq!(rx.try_recv().unwrap().member_id, first.member_id);
    r.member_id = "made-up".into();
    assert_eq!(
        now(g.join(r, 2)).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn protocol_errors_are_reported() {
    let mut g = Group::new("g", cfg());
    let results = form(&mut g, 1, 0);
    let a = &results[0];
    let s = now(g.sync(&a.member_id, None, a.generation + 5, vec![], 1));
    assert_eq!(s.error, Some(ResponseError::IllegalGeneration));
    assert_eq!(
        g.heartbeat("nobody", None, 1, 1),
        Some(ResponseError::UnknownMemberId)
    );
    let mut bad = req("", None);
    bad.session_timeout_ms = 10;
    assert_eq!(
        now(g.join(bad, 1)).error,
        Some(ResponseError::InvalidSessionTimeout)
    );
    let mut other = req("", None);
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert_eq!(
        now(g.join(other, 1)).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    assert_eq!(
        g.leave("nobody", None, 1),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn protocol_is_chosen_by_vote_among_common_ones() {
    let mut g = Group::new("g", cfg());
    let mut a = req("", None);
    a.protocols = vec![
        ("cooperative-sticky".into(), Bytes::new()),
        ("range".into(), Bytes::new()),
    ];
    let mut rx = waiting(g.join(a.clone(), 0));
    let ra = rx.try_recv().unwrap();
    assert_eq!(ra.protocol_name.as_deref(), Some("cooperative-sticky"));
    sync_all(&mut g, std::slice::from_ref(&ra), 0);
    let mut b = req("", None);
    b.protocols = vec![("range".into(), Bytes::new())];
    let mut rxb = waiting(g.join(b, 1));
    a.member_id = ra.member_id.clone();
    let mut rxa = waiting(g.join(a, 1));
    let (ra, _) = (rxa.try_recv().unwrap(), rxb.try_recv().unwrap());
    assert_eq!(ra.protocol_name.as_deref(), Some("range"));
}

#[test]
fn last_member_leaving_empties_the_group() {
    let mut g = Group::new("g", cfg());
    let rs = form(&mut g, 1, 0);
    sync_all(&mut g, &rs, 0);
    assert_eq!(g.leave(&rs[0].member_id, None, 1), None);
    assert_eq!(g.state(), GroupState::Empty);
    assert!(g.is_empty());
}

#[test]
fn static_leader_restart_does_not_rebalance_either() {
    let mut g = Group::new("g", cfg());
    let mut rxa = waiting(g.join(req("", Some("inst-a")), 0));
    let a = rxa.try_recv().unwrap();
    sync_all(&mut g, std::slice::from_ref(&a), 0);
    let mut rxb = waiting(g.join(req("", Some("inst-b")), 1));
    let mut rxa = waiting(g.join(req(&a.member_id, Some("inst-a")), 1));
    let (a, b) = (rxa.try_recv().unwrap(), rxb.try_recv().unwrap());
    assert_eq!(a.leader, a.member_id);
    sync_all(&mut g, &[a.clone(), b.clone()], 1);
    let generation = g.generation();
    // The leader's process restarts with the same instance id.
    let a2 = now(g.join(req("", Some("inst-a")), 5_000));
    assert_eq!(a2.generation, generation);
    assert_eq!(a2.leader, a2.member_id, "it is still the leader");
    assert!(a2.skip_assignment);
    assert_eq!(g.state(), GroupState::Stable);
    // Whatever it sends, it gets its old assignment back; the follower is untouched.
    let s = now(g.sync(&a2.member_id, Some("inst-a"), generation, vec![], 5_001));
    assert_eq!(s.assignment, Bytes::from(format!("for-{}", a.member_id)));
    assert_eq!(
        g.heartbeat(&b.member_id, Some("inst-b"), generation, 5_002),
        None
    );
}

#[test]
fn a_member_that_dies_mid_rebalance_is_dropped_after_its_session_timeout() {
    let mut g = Group::new("g", cfg());
    let mut a = waiting(g.join(req("", None), 0));
    let a = a.try_recv().unwrap();
    sync_all(&mut g, std::slice::from_ref(&a), 0);
    let mut b_rx = waiting(g.join(req("", None), 0));
    let mut a_rx = waiting(g.join(req(&a.member_id, None), 0));
    let b = b_rx.try_recv().unwrap();
    let _ = a_rx.try_recv().unwrap();
    let members = [a.clone(), b.clone()];
    // Both are in generation 2 and synced.
    let results: Vec<JoinResult> = members
        .iter()
        .map(|m| JoinResult {
            generation: b.generation,
            leader: b.leader.clone(),
            ..m.clone()
        })
        .collect();
    sync_all(&mut g, &results, 0);
    assert_eq!(g.state(), GroupState::Stable);
    // A third member starts a rebalance at t=1 s; `a` rejoins, `b` is dead.
    let mut c_rx = waiting(g.join(req("", None), 1_000));
    let mut a_rx = waiting(g.join(req(&a.member_id, None), 1_000));
    g.heartbeat(&a.member_id, None, b.generation, 1_000);
    assert!(
        g.tick(9_000).is_empty(),
        "b's session (10 s) has not run out"
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // Long before the 30 s rebalance deadline, b's session runs out.
    let expired = g.tick(10_001);
    assert_eq!(expired, vec![b.member_id.clone()]);
    let a2 = a_rx.try_recv().expect("round completed without b");
    let c2 = c_rx.try_recv().expect("round completed without b");
    assert_eq!(a2.generation, b.generation + 1);
    assert_eq!(c2.generation, a2.generation);
    assert!(!g.has_member(&b.member_id));
    assert_eq!(g.members().count(), 2);
}
