use super::*;

const HASH: &str = "h2";

fn sts(replicas: i32, partition: i32, hash: &str, update_revision: &str) -> StatefulSet {
    // Mid-roll: the StatefulSet still reports the old revision as current.
    let current_revision = "rev1";
    serde_yaml::from_str(&format!(
        "metadata:\n  name: demo\n  generation: 4\n  annotations:\n    {TEMPLATE_HASH_ANNOTATION}: {hash}\n\
         spec:\n  replicas: {replicas}\n  selector: {{}}\n  serviceName: demo-brokers\n  template: {{}}\n\
         \x20 updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: {partition}\n\
         status:\n  replicas: {replicas}\n  observedGeneration: 4\n  updateRevision: {update_revision}\n  currentRevision: {current_revision}\n"
    ))
    .expect("sts")
}

fn pod(ordinal: i32, revision: &str, ready: bool) -> Pod {
    serde_yaml::from_str(&format!(
        "metadata:\n  name: demo-{ordinal}\n  labels:\n    {REVISION_LABEL}: {revision}\n\
         status:\n  conditions:\n  - type: Ready\n    status: \"{}\"\n",
        if ready { "True" } else { "False" }
    ))
    .expect("pod")
}

fn view(brokers: &[(i32, bool, i32)], urp: i32) -> ClusterView {
    ClusterView {
        brokers: brokers
            .iter()
            .map(|&(id, draining, replicas)| BrokerView {
                id,
                rack: None,
                draining,
                fenced: false,
                replicas,
                leaders: 0,
                min_isr_at_risk: 0,
            })
            .collect(),
        under_replicated: urp,
        offline: 0,
        min_isr_no_spare: Vec::new(),
    }
}

fn run(desired: i32, s: &StatefulSet, pods: &[Pod], v: Option<&ClusterView>) -> Rollout {
    plan(&Inputs {
        desired,
        template_hash: HASH,
        statefulset: Some(s),
        pods,
        view: v,
    })
}

#[test]
fn a_new_cluster_starts_every_broker() {
    let r = plan(&Inputs {
        desired: 3,
        template_hash: HASH,
        statefulset: None,
        pods: &[],
        view: None,
    });
    assert_eq!((r.replicas, r.partition), (3, 0));
    assert!(r.steps.is_empty() && r.activity.is_none());
}

#[test]
fn a_changed_template_freezes_every_pod_first() {
    let s = sts(3, 0, "h1", "rev1");
    let pods = [
        pod(0, "rev1", true),
        pod(1, "rev1", true),
        pod(2, "rev1", true),
    ];
    let r = run(3, &s, &pods, Some(&view(&[], 0)));
    assert_eq!(r.partition, 3);
}

#[test]
fn rolls_the_highest_outdated_broker_only_when_healthy() {
    let s = sts(3, 3, HASH, "rev2");
    let pods = [
        pod(0, "rev1", true),
        pod(1, "rev1", true),
        pod(2, "rev1", true),
    ];
    let r = run(3, &s, &pods, Some(&view(&[], 0)));
    assert_eq!(r.partition, 2);
    assert_eq!(
        r.activity.expect("activity").phase,
        ClusterPhase::RollingRestart
    );
    // Broker 2 restarted and ready, but its partitions are catching up: wait.
    let s = sts(3, 2, HASH, "rev2");
    let pods = [
        pod(0, "rev1", true),
        pod(1, "rev1", true),
        pod(2, "rev2", true),
    ];
    let r = run(3, &s, &pods, Some(&view(&[], 4)));
    assert_eq!(r.partition, 2);
    assert!(r
        .activity
        .expect("activity")
        .message
        .contains("4 under-replicated"));
    // Without the admin API nothing new is released either.
    assert_eq!(run(3, &s, &pods, None).partition, 2);
    // Caught up: next broker.
    assert_eq!(run(3, &s, &pods, Some(&view(&[], 0))).partition, 1);
    // A broker that is not ready holds the roll.
    let pods = [
        pod(0, "rev1", true),
        pod(1, "rev1", false),
        pod(2, "rev2", true),
    ];
    assert_eq!(run(3, &s, &pods, Some(&view(&[], 0))).partition, 2);
}

#[test]
fn a_broker_whose_restart_would_break_min_isr_is_not_released_and_says_why() {
    let s = sts(3, 2, HASH, "rev2");
    let pods = [
        pod(0, "rev1", true),
        pod(1, "rev1", true),
        pod(2, "rev2", true),
    ];
    let healthy = view(&[(0, false, 3), (1, false, 3), (2, false, 3)], 0);
    assert_eq!(run(3, &s, &pods, Some(&healthy)).partition, 1);
    // Broker 1 is in the ISR of a partition whose ISR sits at min.insync.replicas.
    let mut tight = healthy.clone();
    tight.brokers[1].min_isr_at_risk = 2;
    let r = run(3, &s, &pods, Some(&tight));
    assert_eq!(r.partition, 2, "broker 1 is not released");
    let a = r.activity.expect("activity");
    assert_eq!(
        (a.phase, a.reason),
        (ClusterPhase::RollingRestart, "RollBlockedByMinIsr")
    );
    assert!(
        a.message
            .contains("broker 1 would take 2 partition(s) below"),
        "{}",
        a.message
    );
    // Topics with no replica to spare are reported, not waited for.
    let mut never = healthy.clone();
    never.min_isr_no_spare = vec!["lonely".into()];
    let r = run(3, &s, &pods, Some(&never));
    assert_eq!(r.partition, 1);
    let a = r.activity.expect("activity");
    assert!(
        a.message
            .contains("[\"lonely\"] have a replicationFactor at or below"),
        "{}",
        a.message
    );
}

#[test]
fn a_finished_roll_resets_the_partition() {
    let s = sts(3, 1, HASH, "rev2");
    let pods = [
        pod(0, "rev2", true),
        pod(1, "rev2", true),
        pod(2, "rev2", true),
    ];
    let r = run(3, &s, &pods, Some(&view(&[], 0)));
    assert_eq!(r.partition, 0);
    assert!(r.activity.is_none());
    // Until the last restarted broker is ready, the roll is still going on.
    let s = sts(3, 0, HASH, "rev2");
    let pods = [
        pod(0, "rev2", false),
        pod(1, "rev2", true),
        pod(2, "rev2", true),
    ];
    let r = run(3, &s, &pods, Some(&view(&[], 0)));
    assert_eq!(r.partition, 0);
    assert_eq!(
        r.activity.expect("activity").phase,
        ClusterPhase::RollingRestart
    );
}

#[test]
fn a_stale_statefulset_status_releases_nothing() {
    let mut s = sts(3, 3, HASH, "rev1");
    s.metadata.generation = Some(5);
    let pods = [
        pod(0, "rev1", true),
        pod(1, "rev1", true),
        pod(2, "rev1", true),
    ];
    assert_eq!(run(3, &s, &pods, Some(&view(&[], 0))).partition, 3);
}

#[test]
fn scale_in_drains_the_highest_brokers_before_shrinking() {
    let s = sts(5, 0, HASH, "rev1");
    let pods: Vec<Pod> = (0..5).map(|i| pod(i, "rev1", true)).collect();
    let v = view(
        &[
            (0, false, 4),
            (1, false, 4),
            (2, false, 4),
            (3, false, 3),
            (4, false, 3),
        ],
        0,
    );
    let r = run(3, &s, &pods, Some(&v));
    assert_eq!(r.replicas, 5, "no pod removed before the drain");
    assert_eq!(r.steps, vec![AdminStep::Drain(3), AdminStep::Drain(4)]);
    assert_eq!(
        r.activity.as_ref().expect("activity").phase,
        ClusterPhase::Draining
    );
    // Draining, one still holds replicas: keep waiting, no repeated drain call.
    let v = view(
        &[
            (0, false, 6),
            (1, false, 6),
            (2, false, 5),
            (3, true, 1),
            (4, true, 0),
        ],
        1,
    );
    let r = run(3, &s, &pods, Some(&v));
    assert_eq!((r.replicas, r.steps.len()), (5, 0));
    assert!(r
        .activity
        .expect("activity")
        .message
        .contains("3 (1 replicas)"));
    // Empty: shrink.
    let v = view(
        &[
            (0, false, 6),
            (1, false, 6),
            (2, false, 6),
            (3, true, 0),
            (4, true, 0),
        ],
        0,
    );
    let r = run(3, &s, &pods, Some(&v));
    assert_eq!(r.replicas, 3);
    assert_eq!(r.activity.expect("activity").phase, ClusterPhase::Scaling);
    // No admin API: hold.
    assert_eq!(run(3, &s, &pods, None).replicas, 5);
}

#[test]
fn brokers_that_stay_or_return_are_undrained() {
    let s = sts(3, 0, HASH, "rev1");
    let pods: Vec<Pod> = (0..3).map(|i| pod(i, "rev1", true)).collect();
    // Scaled back out to 4 after a scale-in left broker 3 drained.
    let v = view(
        &[(0, false, 2), (1, false, 2), (2, false, 2), (3, true, 0)],
        0,
    );
    let r = run(4, &s, &pods, Some(&v));
    assert_eq!(r.replicas, 4);
    assert_eq!(r.steps, vec![AdminStep::Undrain(3)]);
    // While scaling in, the leaving brokers stay drained.
    let s = sts(4, 0, HASH, "rev1");
    let r = run(3, &s, &pods, Some(&v));
    assert!(r.steps.is_empty(), "{:?}", r.steps);
}

#[test]
fn brokers_whose_pods_are_gone_are_unregistered_once_fenced_and_empty() {
    let s = sts(3, 0, HASH, "rev1");
    let pods: Vec<Pod> = (0..3).map(|i| pod(i, "rev1", true)).collect();
    let gone = |fenced: bool, replicas: i32| {
        let mut v = view(
            &[
                (0, false, 2),
                (1, false, 2),
                (2, false, 2),
                (3, true, replicas),
            ],
            0,
        );
        v.brokers[3].fenced = fenced;
        v
    };
    // Scaled in to 3, broker 3's pod removed and its heartbeats stopped.
    let r = run(3, &s, &pods, Some(&gone(true, 0)));
    assert_eq!(r.steps, vec![AdminStep::Unregister(3)]);
    assert!(r.forgetting);
    // Not fenced yet (still heartbeating, or only just stopped): wait, and look
    // again soon.
    let r = run(3, &s, &pods, Some(&gone(false, 0)));
    assert!(r.steps.is_empty() && r.forgetting);
    let mut settled = gone(true, 0);
    settled.brokers.pop();
    assert!(!run(3, &s, &pods, Some(&settled)).forgetting);
    // Still named by a partition: never.
    assert!(run(3, &s, &pods, Some(&gone(true, 1))).steps.is_empty());
    // Its pod still exists (terminating): wait.
    let mut with_pod = pods.clone();
    with_pod.push(pod(3, "rev1", false));
    assert!(run(3, &s, &with_pod, Some(&gone(true, 0))).steps.is_empty());
    // Scaling back out to 4 instead: it comes back, nothing is forgotten.
    let r = run(4, &s, &pods, Some(&gone(true, 0)));
    assert_eq!(r.steps, vec![AdminStep::Undrain(3)]);
}

#[test]
fn a_template_is_rolled_out_when_every_broker_runs_it_and_is_ready() {
    let s = sts(3, 0, HASH, "rev2");
    let all = [
        pod(0, "rev2", true),
        pod(1, "rev2", true),
        pod(2, "rev2", true),
    ];
    assert!(rolled_out(Some(&s), &all, HASH));
    // Another template on the StatefulSet, a broker not ready or still on the old
    // revision, or no StatefulSet: not yet.
    assert!(!rolled_out(Some(&s), &all, "h3"));
    let one_down = [
        pod(0, "rev2", true),
        pod(1, "rev2", false),
        pod(2, "rev2", true),
    ];
    assert!(!rolled_out(Some(&s), &one_down, HASH));
    let mid_roll = [
        pod(0, "rev1", true),
        pod(1, "rev2", true),
        pod(2, "rev2", true),
    ];
    assert!(!rolled_out(Some(&s), &mid_roll, HASH));
    assert!(!rolled_out(None, &all, HASH));
    // The StatefulSet controller has not seen the latest spec yet.
    let mut stale = s.clone();
    stale.metadata.generation = Some(5);
    assert!(!rolled_out(Some(&stale), &all, HASH));
}
