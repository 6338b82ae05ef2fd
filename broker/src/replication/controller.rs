//! The controller's loop, run on the Raft leader every half second: it fences
//! brokers whose heartbeats stopped and elects new leaders from the ISR, creates
//! `__consumer_offsets` once enough brokers registered, and moves reassignments,
//! drains and preferred-leader elections forward. The decisions themselves are pure
//! functions in `metadata::cluster`; this module only gathers the state, proposes
//! the commands (never forwarding: only the leader's own view counts) and logs them.

use std::sync::Arc;

use tracing::{info, warn};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::cluster;
use crate::metadata::cluster::Command;

/// What the controller keeps between its rounds while it leads the quorum.
pub(super) struct ControllerTerm {
    /// When this broker became the Raft leader (ms).
    pub leader_since: i64,
    /// When the preferred-leader elections of the imbalance seen are due (ms): set
    /// `leader_imbalance_check_interval_seconds` after an imbalance first appears,
    /// cleared once it is gone or its elections were proposed.
    pub balance_due: Option<i64>,
}

impl ControllerTerm {
    pub fn new(now: i64) -> Self {
        Self {
            leader_since: now,
            balance_due: None,
        }
    }
}

/// One round of the controller's duties; runs only on the Raft leader.
pub(super) async fn controller_round(b: &Arc<Broker>, term: &mut ControllerTerm) {
    let leader_since = term.leader_since;
    let state = b.cluster();
    let now = now_ms();
    let learners: Vec<(u64, String)> = state
        .brokers
        .values()
        .filter(|x| !x.internal.is_empty())
        .map(|x| (x.id as u64, x.internal.clone()))
        .collect();
    b.quorum.sync_learners(&learners).await;
    let mut cmds = Vec::new();
    // A new controller gives brokers one session to find it before fencing anyone.
    if now - leader_since > b.config.broker_session_timeout_ms {
        // The controller is alive by definition: a slow heartbeat commit under load
        // must never make it fence itself (on a single broker that would take every
        // partition offline).
        let mut view = (*state).clone();
        if let Some(me) = view.brokers.get_mut(&b.node_id()) {
            me.last_heartbeat_ms = now;
        }
        cmds.extend(cluster::fence_and_elect(
            &view,
            now,
            b.config.broker_session_timeout_ms,
        ));
    }
    if cmds.is_empty() {
        cmds.extend(cluster::progress_actions(&state));
        if b.config.auto_leader_rebalance_enable {
            let interval_ms = b
                .config
                .leader_imbalance_check_interval_seconds
                .saturating_mul(1000) as i64;
            cmds.extend(due_preferred_elections(
                cluster::preferred_leader_elections(&state),
                &mut term.balance_due,
                now,
                interval_ms,
            ));
        }
    }
    if !state.topics.contains_key(OFFSETS_TOPIC) {
        if let Some(cmd) =
            b.internal_topic_command(&state, OFFSETS_TOPIC, b.config.offsets_topic_partitions)
        {
            cmds.push(cmd);
        }
    }
    propose_in_order(cmds, |cmd| b.quorum.propose_as_leader(cmd)).await;
}

/// The preferred-leader elections to propose now: none until the imbalance has
/// lasted `interval_ms`, so leadership does not swing back the moment a restarted
/// broker rejoins the ISR, while clients are still finding the leaders and
/// coordinators of the failover (as Kafka waits
/// `leader.imbalance.check.interval.seconds`).
fn due_preferred_elections(
    elections: Vec<Command>,
    due: &mut Option<i64>,
    now: i64,
    interval_ms: i64,
) -> Vec<Command> {
    if elections.is_empty() {
        *due = None;
        return elections;
    }
    let at = *due.get_or_insert(now.saturating_add(interval_ms));
    if now < at {
        return Vec::new();
    }
    *due = None;
    elections
}

/// How many leader elections the controller proposes at once.
const ELECTION_BATCH: usize = 256;

/// Proposes a round's commands in order (consecutive elections together). The elections of a round assume its
/// fencings: when the quorum refuses a FenceBroker (the broker heartbeated after the
/// decision), the rest of the round is dropped, or leadership would move off a live
/// broker and come back to it (auto leader rebalance) at the next round; the next
/// round decides again from the state as it is.
async fn propose_in_order<F, Fut, T, E>(cmds: Vec<Command>, mut propose: F)
where
    F: FnMut(Command) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let is_election = |c: &Command| matches!(c, Command::ElectLeader { .. });
    let mut cmds = cmds.into_iter().peekable();
    while let Some(cmd) = cmds.next() {
        if is_election(&cmd) {
            // Elections of different partitions are independent: proposed together
            // (a batch at a time), the quorum commits them in a few log writes rather
            // than a round trip and an fsync each, so the failover of a broker that
            // led thousands of partitions takes seconds, not minutes.
            let mut batch = vec![cmd];
            while batch.len() < ELECTION_BATCH {
                match cmds.next_if(is_election) {
                    Some(c) => batch.push(c),
                    None => break,
                }
            }
            let whats: Vec<String> = batch.iter().map(|c| format!("{c:?}")).collect();
            let results = futures::future::join_all(batch.into_iter().map(&mut propose)).await;
            for (what, result) in whats.iter().zip(results) {
                match result {
                    Ok(_) => info!(command = %truncate(what, 200), "controller applied"),
                    Err(e) => {
                        warn!(command = %truncate(what, 200), error = %e, "controller command failed")
                    }
                }
            }
            continue;
        }
        let what = format!("{cmd:?}");
        let fencing = matches!(cmd, Command::FenceBroker { .. });
        match propose(cmd).await {
            Ok(_) => info!(command = %truncate(&what, 200), "controller applied"),
            Err(e) => {
                warn!(command = %truncate(&what, 200), error = %e, "controller command failed");
                if fencing {
                    return;
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elect(partition: i32) -> Command {
        Command::ElectLeader {
            topic: "t".into(),
            partition,
            leader: 1,
        }
    }

    async fn proposed(cmds: Vec<Command>, refuse_fence: bool) -> Vec<String> {
        let seen = std::cell::RefCell::new(Vec::new());
        propose_in_order(cmds, |cmd| {
            let refused = refuse_fence && matches!(cmd, Command::FenceBroker { .. });
            seen.borrow_mut().push(format!("{cmd:?}"));
            async move {
                if refused {
                    Err("broker 2 heartbeated after the fencing decision")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        seen.into_inner()
    }

    #[tokio::test]
    async fn a_refused_fencing_drops_the_elections_that_assumed_it() {
        let round = || {
            vec![
                Command::FenceBroker {
                    id: 2,
                    last_heartbeat_ms: Some(1),
                },
                elect(0),
                elect(1),
            ]
        };
        assert_eq!(proposed(round(), false).await.len(), 3);
        let refused = proposed(round(), true).await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].starts_with("FenceBroker"));
        // A failed election does not stop the others.
        assert_eq!(proposed(vec![elect(0), elect(1)], true).await.len(), 2);
        // Elections go in batches, fencings before them, all in order.
        let mut many = vec![Command::FenceBroker {
            id: 2,
            last_heartbeat_ms: Some(1),
        }];
        many.extend((0..600).map(elect));
        let seen = proposed(many, false).await;
        assert_eq!(seen.len(), 601);
        assert!(seen[0].starts_with("FenceBroker"));
        assert!(seen[1..]
            .iter()
            .enumerate()
            .all(|(i, c)| *c == format!("{:?}", elect(i as i32))));
    }

    #[test]
    fn preferred_elections_wait_for_the_imbalance_check_interval() {
        let mut due = None;
        // An imbalance appears at t=1000: nothing before t=1000+300000.
        assert!(due_preferred_elections(vec![elect(0)], &mut due, 1000, 300_000).is_empty());
        assert_eq!(due, Some(301_000));
        assert!(due_preferred_elections(vec![elect(0)], &mut due, 300_999, 300_000).is_empty());
        // Gone in between (a manual election): the clock starts again next time.
        assert!(due_preferred_elections(Vec::new(), &mut due, 200_000, 300_000).is_empty());
        assert_eq!(due, None);
        assert!(due_preferred_elections(vec![elect(0)], &mut due, 250_000, 300_000).is_empty());
        assert!(due_preferred_elections(vec![elect(0)], &mut due, 549_999, 300_000).is_empty());
        let now = due_preferred_elections(vec![elect(0), elect(1)], &mut due, 550_000, 300_000);
        assert_eq!(now.len(), 2);
        assert_eq!(
            due, None,
            "proposed: a later imbalance waits a whole interval again"
        );
        // Interval 0: at once, as before the setting existed.
        assert_eq!(
            due_preferred_elections(vec![elect(0)], &mut due, 7, 0).len(),
            1
        );
    }
}
