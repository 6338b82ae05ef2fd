"""Fault injection with a history checker (docs/reliability.md).

A 3-broker cluster, each broker in its own network namespace when this host allows
it (and, in the seeded and long runs, on its own tmpfs, with a tiered topic on a
SeaweedFS S3 server), is driven by idempotent acks=all producers and a consumer group
(and, in the seeded and long runs, a transactional writer and an exactly-once
copier) while a nemesis kills, pauses, cuts off and degrades brokers, fills a
broker's disk, stops, takes down or slows the object store, adds a broker and drains
it away again, pauses group members and kills the copier and the transaction
coordinator, on a schedule drawn from a seed. Every operation goes into a history;
after healing, a fresh consumer reads every partition from offset 0 and
faults/checker.py looks for lost, duplicated, reordered or inconsistent records, for
offsets moving backwards, and for aborted reads, torn or lost transactions and a copy
that is not exactly its committed input.

Short profile (default, runs in `make test`): fixed seeds, about 4 minutes.
Long profile: STRATA_FAULT_PROFILE=long STRATA_FAULT_MINUTES=30 [STRATA_FAULT_SEED=n].
Replay one seed of either profile with STRATA_FAULT_SEED=n."""
import json
import os
import random
import time

import pytest
from confluent_kafka import KafkaException

from faults import history as hist
from faults.checker import check
from faults.cluster import FaultCluster
from faults.nemesis import Nemesis, offsets_partition, schedule
from faults.workload import (CommittedReader, Copier, Member, TierSampler, TxnWriter, Writer, final_read,
                             txn_final_read)

PROFILE = os.environ.get("STRATA_FAULT_PROFILE", "short")
TOPIC = "faults"
PARTITIONS = 3
# One group id per test process: nothing outside this run can be a member.
GROUP = f"fault-group-{os.getpid()}"
# The transactional workload: a writer's topic and the copier's output, neither
# tiered (the tier does not keep the aborted-transaction index yet).
TXN_IN, TXN_OUT = "faults-txn", "faults-txn-copy"
TXN_WRITER_ID = f"fault-txw-{os.getpid()}"
COPIER_ID = f"fault-copier-{os.getpid()}"


@pytest.fixture
def cluster(tmp_path):
    # STRATA_FAULT_NETNS=0 forces the loopback fallback (process faults only).
    c = FaultCluster(tmp_path / "cluster", 3, use_netns=os.environ.get("STRATA_FAULT_NETNS", "1") != "0")
    try:
        c.start()
        yield c
    finally:
        c.close()


# Per broker: the data dir's tmpfs (the disk-full fault fills it). A long run keeps
# well below it: the tiered topic keeps little locally.
DISK_MB = int(os.environ.get("STRATA_FAULT_DISK_MB", "256"))
# The tiered topic: segments roll every 4 s or 64 KiB, so uploads happen all the
# time, and only the newest 128 KiB stay local, so the final read from offset 0 reads
# mostly from the tier.
TIERED = ["remote.storage.enable=true", "segment.ms=4000", f"segment.bytes={64 << 10}",
          f"local.retention.bytes={128 << 10}", "local.retention.ms=2000"]


@pytest.fixture
def full_cluster(tmp_path):
    """The cluster of the seeded and long runs: also each broker on a tmpfs, the tier
    on SeaweedFS behind a delaying proxy, and brokers joining and leaving."""
    c = FaultCluster(tmp_path / "cluster", 3, use_netns=os.environ.get("STRATA_FAULT_NETNS", "1") != "0",
                     disk_mb=DISK_MB, tier=os.environ.get("STRATA_FAULT_TIER", "1") != "0")
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture
def clients(request):
    """Producers, members and readers a test made: stopped before the cluster goes,
    also when the test failed half-way (a member left running would keep dialling
    addresses that no longer exist)."""
    # Whichever cluster fixture the test uses is set up first.
    for name in ("cluster", "full_cluster"):
        if name in request.fixturenames:
            request.getfixturevalue(name)
    made = []
    yield made
    for x in reversed(made):
        try:
            x.stop(timeout=10) if isinstance(x, (Writer, TxnWriter)) else x.stop()
        except Exception as e:  # noqa: BLE001 - teardown goes on with the others
            print("teardown:", x, e)


def create_topic(c, name=TOPIC, partitions=PARTITIONS, configs=()):
    args = [a for kv in ["min.insync.replicas=2", *configs] for a in ("--config", kv)]
    c.cli("topic", "create", name, "--partitions", str(partitions), "--replication-factor", "3", *args)
    deadline = time.monotonic() + 30
    while not c.fully_replicated([name]):
        assert time.monotonic() < deadline, "topic never fully replicated"
        time.sleep(0.2)


def wait_for(what, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def acked(h):
    return sum(1 for op in h.ops if op["f"] == "send" and op["type"] == "ok")


def panicked(c):
    """Broker logs (of this run) that show a panic."""
    out = []
    for b in c.all_brokers().values():
        if b.log_path.exists() and "panicked at" in b.log_path.read_text(errors="replace"):
            out.append(str(b.log_path))
    return out


class TxnWorkload:
    """The transactional writer on TXN_IN and the exactly-once copier TXN_IN -> TXN_OUT."""

    def __init__(self, c, h, tmp, seed):
        for t in (TXN_IN, TXN_OUT):
            create_topic(c, t)
        self.writer = TxnWriter(h, "tw", c.bootstrap(), TXN_IN, PARTITIONS, TXN_WRITER_ID, seed=seed).start()
        self.copier = Copier(tmp, "copier", c.bootstrap(), TXN_IN, TXN_OUT, COPIER_ID, COPIER_ID)
        self.topics = [TXN_IN, TXN_OUT, "__transaction_state"]

    def finish(self, c, h):
        """After healing: the writer stops, the copier catches up with every committed
        input record (its group's committed offsets pass the last one) and stops, and
        both topics are read back with both isolation levels."""
        self.writer.stop()
        assert not self.writer.thread.is_alive(), "the transactional writer did not stop"
        txn_final_read(h, c.bootstrap(), TXN_IN, PARTITIONS)
        last = {}
        for op in h.ops:
            if op["f"] == "txn-final" and op["topic"] == TXN_IN and op["isolation"] == "read_committed":
                last[op["partition"]] = max(op["offset"], last.get(op["partition"], -1))
        assert self.copier.alive(), f"the copier exited: {self.copier.err.name}"

        def caught_up():
            try:
                done = self.copier.committed(PARTITIONS)
            except KafkaException:  # a coordinator still moving: ask again
                return False
            return all(done.get(p, -1) > o for p, o in last.items())
        try:
            wait_for("the copier's committed offsets past the last committed input record", caught_up, 120)
        except AssertionError:
            self.copier.dump_stacks()
            time.sleep(1)
            last_ops = [{k: v for k, v in op.items() if k != "values"}
                        for op in hist.load(self.copier.history_path)[-3:]]
            raise AssertionError(f"the copier made no progress; its last operations: {last_ops}; its stacks "
                                 f"and client log: {self.copier.err.name}") from None
        self.copier.stop()
        h.record("test", "info", "copy-config", src=TXN_IN, dst=TXN_OUT)
        txn_final_read(h, c.bootstrap(), TXN_OUT, PARTITIONS)


def run_and_check(c, h, tmp, writers, members, reader, plan, sampler=None, txn=None):
    """Applies `plan`, stops the clients, reads everything back and checks the history."""
    nemesis = Nemesis(c, h, [TOPIC, "__consumer_offsets", *(txn.topics if txn else ())], members,
                      tier_topic=TOPIC if getattr(c, "has_tier", False) else None,
                      copier=txn.copier if txn else None, txn_ids=[TXN_WRITER_ID, COPIER_ID] if txn else ())
    started = time.monotonic()
    try:
        nemesis.run(plan)
    finally:
        # Whatever happened, heal first: the final read needs the whole cluster.
        c.heal()
    nemesis.wait_recovered(90)
    for w in writers:
        w.stop()
    # Members catch up with the last writes before they stop, so their reads cover
    # the end of the log too.
    time.sleep(2)
    for m in members:
        m.stop()
    if reader:
        reader.stop()
    if sampler:
        sampler.stop()
    tiered = {}
    if getattr(c, "has_tier", False):
        # What the final read has to fetch from the tier: below every local start.
        d = c.cli("topic", "describe", TOPIC)["partition_details"]
        tiered = {p["partition"]: p.get("remote_end_offset", -1) for p in d}
    final_read(h, c.bootstrap(), TOPIC, PARTITIONS)
    if txn:
        txn.finish(c, h)
    ops = hist.load(h.path, *[m.history_path for m in members], *([txn.copier.history_path] if txn else []))
    result = check(ops)
    report = {
        "faults": [(k, t, p["hold"]) for k, t, p in nemesis.applied],
        "seconds": round(time.monotonic() - started, 1),
        "operations": len(ops),
        "netns": c.has_net or c.netns_reason,
        "fatal_producer_errors": [f for w in writers for f in w.fatal],
        "txn_producers": txn.writer.producers if txn else 0,
        "copier_starts": txn.copier.starts if txn else 0,
        "copier_transactions": {t: sum(1 for op in ops if op["f"] == "copy" and op["type"] == t)
                                for t in ("ok", "fail", "info")} if txn else {},
        **result.stats,
        "tiered_end_offsets": tiered,
        # (partition, offset, the leader's local start, records read) of every read of
        # tiered offsets during and after an object-store fault.
        "tier_probes": [(op["partition"], op["offset"], op["local_start"], op["got"])
                        for op in ops if op["f"] == "tier-probe-range"],
        "panics": panicked(c),
        "anomalies": result.found(),
    }
    (tmp / "report.json").write_text(json.dumps(report, indent=1))
    print("fault run:", json.dumps(report))
    assert result.ok, f"anomalies (history {h.path}):\n{result.summary()}"
    assert not report["panics"], f"a broker panicked: {report['panics']}"
    return report, result


def random_fault_run(c, clients, tmp, seed, seconds, each_once, with_txn=True):
    print(f"fault seed {seed} (replay: STRATA_FAULT_SEED={seed}), {seconds}s of faults, netns: "
          f"{c.has_net or c.netns_reason}")
    print(f"disk faults: {c.has_disk or c.disk_reason}, tier faults: {c.has_tier or c.tier_reason}")
    create_topic(c, configs=TIERED if c.has_tier else ())
    h = hist.History(tmp / "history.jsonl")
    writers = [Writer(h, f"w{i}", c.bootstrap(), TOPIC, PARTITIONS, rate=150).start() for i in range(2)]
    members = [Member(tmp, f"m{i}", c.bootstrap(), TOPIC, GROUP) for i in range(2)]
    reader = CommittedReader(h, c.bootstrap(), TOPIC, PARTITIONS, GROUP).start()
    sampler = TierSampler(h, c, TOPIC).start() if c.has_tier else None
    clients += [*writers, *members, reader, *([sampler] if sampler else [])]
    txn = TxnWorkload(c, h, tmp, seed) if with_txn else None
    if txn:
        clients += [txn.writer, txn.copier]
    wait_for("first acknowledged writes", lambda: acked(h) > 100, 30)
    if txn:
        wait_for("first committed transactions", lambda: txn.writer.counts["ok"] > 5, 60)
    plan = schedule(seed, seconds, c.has_net, PARTITIONS, c.ids, each_once=each_once, has_disk=c.has_disk,
                    has_tier=c.has_tier, membership=True, txn=bool(txn))
    print("plan:", plan)
    report, _ = run_and_check(c, h, tmp, writers, members, reader, plan, sampler, txn)
    assert report["acked"] > 1000, report
    assert report["reads"] > 0 and report["commits"] > 0, report
    if txn:
        # Both outcomes happened, read_committed had aborted records to skip, and the
        # copier copied: the transaction rules judged something.
        assert report["txns_committed"] > 0 and report["txns_aborted"] > 0, report
        assert report["txn_aborted_records_in_log"] > 0, report
        assert report["copied_records_read"] > 0, report
    if c.has_tier:
        # Segments were uploaded (and the final read from 0 went through them), and
        # the local-versus-remote check had samples to judge.
        assert any(e > 0 for e in report["tiered_end_offsets"].values()), report
        assert report["tier_samples"] > 0, report
        # Uploaded segments left the local disks: the final read from offset 0 read
        # records that only the tier held.
        assert report["tier_max_local_start"] > 0, report
    return report


SHORT_SEEDS = [int(s) for s in os.environ.get("STRATA_FAULT_SEED", "20240501").split(",")]


@pytest.mark.skipif(PROFILE != "short", reason="short profile only")
@pytest.mark.parametrize("seed", SHORT_SEEDS)
def test_seeded_faults_lose_duplicate_or_reorder_nothing(full_cluster, clients, tmp_path, seed):
    # Every fault kind once (13 with namespaces, tmpfs, SeaweedFS and transactions,
    # each ~2-12 s plus recovery).
    random_fault_run(full_cluster, clients, tmp_path, seed, seconds=40, each_once=True)


@pytest.mark.skipif(PROFILE != "long", reason="long profile: STRATA_FAULT_PROFILE=long")
def test_long_random_faults(full_cluster, clients, tmp_path):
    seed = int(os.environ.get("STRATA_FAULT_SEED", random.SystemRandom().randrange(1 << 31)))
    minutes = float(os.environ.get("STRATA_FAULT_MINUTES", "30"))
    random_fault_run(full_cluster, clients, tmp_path, seed, seconds=minutes * 60, each_once=False)


@pytest.mark.skipif(PROFILE != "short", reason="short profile only")
def test_idempotent_producer_with_5_in_flight_retries_across_leader_changes(cluster, clients, tmp_path):
    """One partition, writes as fast as the producer goes with 5 requests in flight and
    a short request timeout, so batches are outstanding when the leader dies and are
    retried at the new leader, which must recognise the ones it already has. Where
    namespaces exist the leader is first cut off from its followers, so its in-flight
    batches are appended but not replicated when it is killed."""
    c = cluster
    create_topic(c, TOPIC, partitions=1)
    h = hist.History(tmp_path / "history.jsonl")
    w = Writer(h, "w", c.bootstrap(), TOPIC, 1, rate=2000,
               conf={"linger.ms": 0, "request.timeout.ms": 2000, "retry.backoff.ms": 50}).start()
    clients.append(w)
    nemesis = Nemesis(c, h, [TOPIC])
    wait_for("first acknowledged writes", lambda: acked(h) > 500, 30)
    for round_ in range(3):
        before = acked(h)
        leader = c.leader(TOPIC, 0)
        if c.has_net:
            c.net.cut(leader, [i for i in c.ids if i != leader])
            h.record("nemesis", "info", "nemesis", fault="cut-broker", phase="start", target=leader)
            time.sleep(0.5)
        c.brokers[leader].kill()
        h.record("nemesis", "info", "nemesis", fault="kill-partition-leader", phase="start", target=leader)
        wait_for("a new leader", lambda: c.leader(TOPIC, 0) not in (-1, leader), 30)
        c.heal()
        nemesis.wait_recovered(90)
        wait_for("writes acknowledged by the new leader", lambda: acked(h) > before + 500, 60)
    w.stop()
    final_read(h, c.bootstrap(), TOPIC, 1)
    result = check(hist.load(h.path))
    print("fault run:", json.dumps({**result.stats, "anomalies": result.found(), "fatal": w.fatal}))
    assert result.ok, result.summary()
    assert not w.fatal, w.fatal
    assert result.stats["unknown"] == 0, "a write failed although the producer could retry"


@pytest.mark.skipif(PROFILE != "short", reason="short profile only")
def test_a_member_paused_past_its_session_cannot_move_committed_offsets_back(cluster, clients, tmp_path):
    """Member m0 is stopped (SIGSTOP) past its session timeout; the group rebalances,
    m1 takes m0's partitions and commits beyond m0's position. Woken, m0 commits its
    old positions at once: the coordinator must refuse that commit, and no read of
    the committed offsets may ever go back."""
    c = cluster
    create_topic(c)
    h = hist.History(tmp_path / "history.jsonl")
    writer = Writer(h, "w", c.bootstrap(), TOPIC, PARTITIONS, rate=100).start()
    m0 = Member(tmp_path, "m0", c.bootstrap(), TOPIC, GROUP)
    m1 = Member(tmp_path, "m1", c.bootstrap(), TOPIC, GROUP)
    reader = CommittedReader(h, c.bootstrap(), TOPIC, PARTITIONS, GROUP, interval=0.2).start()
    clients += [writer, m0, m1, reader]

    def member_ops(m):
        return hist.load(m.history_path)

    def owns(m):
        ops = [op for op in member_ops(m) if op["f"] in ("assign", "revoke")]
        return ops[-1]["partitions"] if ops and ops[-1]["f"] == "assign" else []

    def committed_by(m):
        return [op for op in member_ops(m) if op["f"] == "commit" and op["type"] == "ok"]

    def current_assignment(m):
        ops = [op for op in member_ops(m) if op["f"] == "assign"]
        return ops[-1]["assignment"] if ops else None

    def committed_in_current_assignment(m):
        a = current_assignment(m)
        return [op for op in committed_by(m) if op["assignment"] == a]

    # The group settles (both own partitions) and m0 has committed in the assignment
    # it holds now: a pause during the first, transient assignment would leave it
    # nothing to commit on waking.
    wait_for("both members own partitions", lambda: owns(m0) and owns(m1), 60)
    wait_for("m0 committed in its current assignment",
             lambda: owns(m1) and committed_in_current_assignment(m0), 30)
    m0.pause()
    h.record("nemesis", "info", "nemesis", fault="pause-member", phase="start", target="m0")
    stopped_at = time.monotonic()
    wait_for("m1 owns every partition", lambda: len(owns(m1)) == PARTITIONS, 30)
    paused_positions = {int(p): o for op in committed_in_current_assignment(m0) for p, o in op["offsets"].items()}

    def m1_committed_past_m0():
        mine = {}
        for op in committed_by(m1):
            if op["time"] > stopped_at:
                mine.update({int(p): o for p, o in op["offsets"].items()})
        return all(mine.get(p, -1) > o for p, o in paused_positions.items())
    wait_for("m1 committed past m0's positions", m1_committed_past_m0, 30)
    m0.resume()
    h.record("nemesis", "info", "nemesis", fault="pause-member", phase="healed", target="m0")
    wait_for("m0's stale commit answered",
             lambda: any(op["f"] == "commit" and op.get("stale") and op["type"] != "invoke"
                         for op in member_ops(m0)), 30)
    time.sleep(2)  # committed-offset reads after the stale commit
    writer.stop()
    m0.stop()
    m1.stop()
    reader.stop()
    final_read(h, c.bootstrap(), TOPIC, PARTITIONS)
    ops = hist.load(h.path, m0.history_path, m1.history_path)
    stale = [op for op in ops if op["f"] == "commit" and op.get("stale") and op["type"] != "invoke"]
    result = check(ops)
    print("fault run:", json.dumps({**result.stats, "anomalies": result.found(), "stale": stale}))
    assert result.ok, result.summary()
    assert stale and all(op["type"] == "fail" for op in stale), stale


@pytest.mark.skipif(PROFILE != "short", reason="short profile only")
def test_a_paused_coordinator_serves_no_stale_committed_offsets(cluster, clients, tmp_path):
    """The group coordinator is stopped past the broker session timeout while a reader
    of committed offsets keeps asking it; the group moves to a new coordinator and
    commits further. When the old coordinator wakes, the read queued on its socket
    must not be answered with the offsets it had before it was stopped."""
    c = cluster
    create_topic(c)
    h = hist.History(tmp_path / "history.jsonl")
    writer = Writer(h, "w", c.bootstrap(), TOPIC, PARTITIONS, rate=100).start()
    m0 = Member(tmp_path, "m0", c.bootstrap(), TOPIC, GROUP)
    reader = CommittedReader(h, c.bootstrap(), TOPIC, PARTITIONS, GROUP, interval=0.2).start()
    clients += [writer, m0, reader]
    wait_for("commits", lambda: any(op["f"] == "commit" and op["type"] == "ok"
                                    for op in hist.load(m0.history_path)), 60)
    d = c.cli("topic", "describe", "__consumer_offsets")
    coordinator = d["partition_details"][offsets_partition(GROUP, d["partitions"])]["leader"]
    c.brokers[coordinator].pause()
    h.record("nemesis", "info", "nemesis", fault="pause-broker", phase="start", target=coordinator)
    time.sleep(9)  # past the broker session (3 s) and the member's session (6 s)
    c.heal()
    h.record("nemesis", "info", "nemesis", fault="pause-broker", phase="healed", target=coordinator)
    Nemesis(c, h, [TOPIC, "__consumer_offsets"]).wait_recovered(90)
    time.sleep(2)
    writer.stop()
    m0.stop()
    reader.stop()
    final_read(h, c.bootstrap(), TOPIC, PARTITIONS)
    result = check(hist.load(h.path, m0.history_path))
    print("fault run:", json.dumps({**result.stats, "anomalies": result.found(),
                                    "examples": result.anomalies["commit-backwards"][:3]}))
    assert result.ok, result.summary()
