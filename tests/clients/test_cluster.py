"""A real multi-broker cluster on loopback (127.0.0.1-4): the Raft metadata quorum,
replication with acks=all, failover under kill -9 and SIGSTOP, controller failover,
reassignment and drain — checked with librdkafka (confluent-kafka) clients."""
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import BIN, BrokerProcess, watermarks
from faults.nemesis import offsets_partition

CLI = Path(os.environ.get("STRATA_CLI_BIN", BIN.parent / "strata"))


def wait_until(what, check, timeout=30, interval=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - brokers may be restarting
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Cluster:
    def __init__(self, tmp_path, size, voters=3):
        self.nodes = {}
        # Extra environment of the `strata` CLI (admin TLS, token).
        self.cli_env = {}
        for i in range(1, size + 1):
            self.nodes[i] = BrokerProcess(tmp_path / f"node-{i}", host=f"127.0.0.{i}", mode="serve")
        quorum = ",".join(f"{i}@{n.host}:{n.admin_port}" for i, n in self.nodes.items() if i <= voters)
        for i, n in self.nodes.items():
            n.env.update(
                {
                    "STRATA_NODE_ID": str(i),
                    "STRATA_CONTROLLER_VOTERS": quorum,
                    "STRATA_OFFSETS_TOPIC_PARTITIONS": "4",
                    "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
                    "STRATA_BROKER_SESSION_TIMEOUT_MS": "3000",
                    "STRATA_REPLICA_LAG_TIME_MAX_MS": "5000",
                    "STRATA_LOG_SEGMENT_BYTES": str(1 << 20),
                }
            )

    def start(self, ids=None):
        ids = ids or list(self.nodes)
        for i in ids:
            self.nodes[i].start(wait_ready=False)
        for i in ids:
            self.nodes[i].wait_ready(timeout=60)

    def bootstrap(self, exclude=()):
        return ",".join(n.bootstrap for i, n in self.nodes.items() if i not in exclude and n.alive())

    def cli(self, *args, via=None):
        node = self.nodes[via] if via else next(n for n in self.nodes.values() if n.alive())
        out = subprocess.run(
            [str(CLI), "--admin", node.admin, "-o", "json", *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **self.cli_env},
        )
        if out.returncode != 0:
            raise RuntimeError(f"strata {' '.join(args)} failed: {out.stderr.strip()}")
        return json.loads(out.stdout) if out.stdout.strip() else None

    def partition(self, topic, p=0, via=None):
        d = self.cli("topic", "describe", topic, via=via)
        return d["partition_details"][p]

    def stop_all(self):
        for n in self.nodes.values():
            if n.proc and n.proc.poll() is None:
                try:
                    n.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            n.kill()


@pytest.fixture
def cluster_factory(tmp_path):
    made = []

    def make(size=3, start=None, env=None):
        c = Cluster(tmp_path, size)
        for n in c.nodes.values():
            n.env.update(env or {})
        made.append(c)
        c.start(start)
        return c

    yield make
    for c in made:
        c.stop_all()


class NumberedProducer:
    """Produces "0", "1", ... to partition 0 with acks=all and idempotence in a thread;
    records which numbers were acknowledged."""

    def __init__(self, bootstrap, topic, pause=0.002):
        self.topic = topic
        self.acked = []
        self.errors = []
        self.stop_flag = threading.Event()
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.pause = pause
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            def done(err, msg, n=i):
                if err:
                    self.errors.append((n, str(err)))
                else:
                    self.acked.append(n)
            try:
                self.producer.produce(self.topic, value=str(i).encode(), partition=0, on_delivery=done)
                i += 1
            except BufferError:
                pass
            self.producer.poll(self.pause)
        self.producer.flush(120)

    def wait_more(self, n, timeout=60):
        target = len(self.acked) + n
        wait_until(f"{n} more acknowledged records", lambda: len(self.acked) >= target, timeout)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(150)
        return self.acked, self.errors


def read_partition(bootstrap, topic, p=0, timeout=60):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{time.time()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        low, high = watermarks(c, TopicPartition(topic, p))
        c.assign([TopicPartition(topic, p, low)])
        values, next_offset = [], low
        deadline = time.time() + timeout
        while next_offset < high and time.time() < deadline:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            values.append(int(m.value()))
            next_offset = m.offset() + 1
        assert next_offset >= high, f"read stopped at {next_offset} of {high}"
        return values
    finally:
        c.close()


def create_topic(cluster, name, rf=3, min_isr=2, partitions=1, via=None):
    cluster.cli("topic", "create", name, "--partitions", str(partitions), "--replication-factor", str(rf),
                "--config", f"min.insync.replicas={min_isr}", via=via)
    wait_until("all replicas in sync", lambda: len(cluster.partition(name)["isr"]) == rf)


def test_kill_the_leader_five_times_loses_no_acknowledged_record(cluster_factory):
    c = cluster_factory(3)
    create_topic(c, "ha")
    prod = NumberedProducer(c.bootstrap(), "ha")
    prod.wait_more(200)
    for round_ in range(5):
        leader = c.partition("ha")["leader"]
        assert leader in c.nodes, leader
        c.nodes[leader].kill()
        wait_until(f"a new leader after killing {leader}",
                   lambda: c.partition("ha")["leader"] not in (-1, leader), timeout=30)
        prod.wait_more(100)
        c.nodes[leader].start(timeout=60)
        wait_until(f"broker {leader} back in the ISR",
                   lambda: len(c.partition("ha")["isr"]) == 3, timeout=60)
        prod.wait_more(100)
    acked, errors = prod.stop()
    assert not errors, errors[:5]
    values = read_partition(c.bootstrap(), "ha")
    assert len(values) == len(set(values)), "duplicates in the log"
    assert values == sorted(values), "records out of order"
    missing = set(acked) - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:10]}"
    assert len(acked) >= 1200


def test_controller_failover_keeps_metadata_writable(cluster_factory):
    c = cluster_factory(3)
    controller = c.cli("cluster", "describe")["controller_id"]
    assert controller in c.nodes
    c.nodes[controller].kill()
    other = next(i for i in c.nodes if i != controller)
    start = time.time()
    wait_until("a topic created after the controller died",
               lambda: c.cli("topic", "create", "after-failover", "--partitions", "2",
                             "--replication-factor", "2", via=other), timeout=20, interval=0.5)
    elapsed = time.time() - start
    assert elapsed < 15, f"metadata writes stalled {elapsed:.1f}s"
    new_controller = c.cli("cluster", "describe", via=other)["controller_id"]
    assert new_controller not in (-1, controller)
    # And the new topic is usable.
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all"})
    p.produce("after-failover", value=b"x", partition=0)
    assert p.flush(20) == 0


def test_deposed_leader_truncates_its_divergent_tail(cluster_factory):
    # The old leader is the preferred replica: it leads again once it is back in
    # sync and the imbalance has lasted the check interval (1 s here, 300 s default).
    c = cluster_factory(3, env={"STRATA_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS": "1"})
    create_topic(c, "div", min_isr=2)
    part = c.partition("div")
    old = part["leader"]
    followers = [r for r in part["replicas"] if r != old]
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all"})
    for i in range(10):
        p.produce("div", value=str(i).encode(), partition=0)
    assert p.flush(20) == 0
    # Freeze the followers: the leader appends but can never commit these.
    for f in followers:
        os.kill(c.nodes[f].proc.pid, signal.SIGSTOP)
    # Let the followers' in-flight long polls (replica_fetch_max_wait_ms) expire, so
    # no fetch response can still carry the next writes to them.
    time.sleep(1.5)
    lost = Producer({"bootstrap.servers": c.nodes[old].bootstrap, "acks": "all",
                     "message.timeout.ms": 3000, "retries": 0})
    failures = []
    for i in range(1000, 1005):
        lost.produce("div", value=str(i).encode(), partition=0,
                     on_delivery=lambda e, m: failures.append(e) if e else None)
    lost.flush(10)
    assert len(failures) == 5, "writes without the followers must not be acknowledged"
    # Isolate the old leader and let the followers take over.
    os.kill(c.nodes[old].proc.pid, signal.SIGSTOP)
    for f in followers:
        os.kill(c.nodes[f].proc.pid, signal.SIGCONT)
    wait_until("a new leader", lambda: c.partition("div", via=followers[0])["leader"] in followers, timeout=30)
    failover_epoch = c.partition("div", via=followers[0])["leader_epoch"]
    p2 = Producer({"bootstrap.servers": c.bootstrap(exclude=(old,)), "acks": "all"})
    for i in range(10, 20):
        p2.produce("div", value=str(i).encode(), partition=0)
    assert p2.flush(30) == 0
    os.kill(c.nodes[old].proc.pid, signal.SIGCONT)
    # The old leader truncates, catches up, rejoins the ISR and (preferred replica)
    # leads again: reading from it shows the committed records only. Its progress is
    # read from a follower: right after SIGCONT the old leader's own view is the one
    # it had when it was stopped (itself leading, its old ISR), and reading from it
    # then returned the records it had, 0-9 (a stale read, not a lost write).
    def led_again():
        part = c.partition("div", via=followers[0])
        return part["leader"] == old and part["leader_epoch"] > failover_epoch and old in part["isr"]
    wait_until("old leader back in the ISR and leading again", led_again, timeout=120)
    values = read_partition(c.nodes[old].bootstrap, "div")
    assert values == list(range(20)), values
    truncations = [l for l in c.nodes[old].metrics().splitlines()
                   if l.startswith("strata_replica_truncations")]
    assert truncations and float(truncations[0].split()[-1]) >= 1, truncations


def test_followers_stay_in_the_isr_under_sustained_load(cluster_factory):
    """60 s of continuous acks=all and acks=1 produce: the leader appends between
    every two follower fetches, so a follower never reaches the leader's current
    log end. It must still count as caught up (it reaches the end the leader had
    at its previous fetch) and never leave the ISR (replica lag 5 s here)."""
    c = cluster_factory(3)
    create_topic(c, "steady", min_isr=2)
    acks_all = NumberedProducer(c.bootstrap(), "steady", pause=0.001)
    stop = threading.Event()
    acks_one_errors = []

    def acks_one():
        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": 1, "linger.ms": 1})
        while not stop.is_set():
            try:
                p.produce("steady", value=b"x" * 200, partition=0,
                          on_delivery=lambda e, m: acks_one_errors.append(e) if e else None)
            except BufferError:
                pass
            p.poll(0.001)
        p.flush(30)
    t = threading.Thread(target=acks_one, daemon=True)
    t.start()
    short = []
    deadline = time.time() + 60
    samples = 0
    while time.time() < deadline:
        part = c.partition("steady")
        samples += 1
        if sorted(part["isr"]) != sorted(part["replicas"]):
            short.append((round(60 - (deadline - time.time()), 1), part["isr"]))
        time.sleep(1)
    stop.set()
    t.join(60)
    acked, errors = acks_all.stop()
    assert not short, f"the ISR shrank under load ({len(short)} of {samples} samples): {short[:5]}"
    assert not errors and not acks_one_errors, (errors[:3], acks_one_errors[:3])
    assert len(acked) > 1000, f"the load was too light to matter: {len(acked)} records"


def test_reassignment_and_drain_under_load(cluster_factory):
    c = cluster_factory(4, start=[1, 2, 3])
    create_topic(c, "moving")
    assert sorted(c.partition("moving")["replicas"]) == [1, 2, 3]
    c.start([4])
    prod = NumberedProducer(c.bootstrap(), "moving")
    prod.wait_more(300)
    r = c.cli("topic", "reassign", "moving", "0", "--replicas", "2,3,4")
    wait_until("reassignment done",
               lambda: c.cli("topic", "reassignment-status", r["id"])["completed_moves"] == 1, timeout=60)
    part = c.partition("moving")
    assert part["replicas"] == [2, 3, 4], part
    assert sorted(part["isr"]) == [2, 3, 4]
    prod.wait_more(200)

    # Drain broker 3: it ends with no replicas and no leadership, then stopping it
    # is invisible to clients.
    c.cli("broker", "drain", "3")

    def drained():
        brokers = {b["id"]: b for b in c.cli("cluster", "describe")["brokers"]}
        return brokers[3]["replicas"] == 0 and brokers[3]["leaders"] == 0
    wait_until("broker 3 drained", drained, timeout=90)
    prod.wait_more(100)
    c.nodes[3].stop()
    prod.wait_more(300)
    acked, errors = prod.stop()
    assert not errors, errors[:5]
    values = read_partition(c.bootstrap(exclude=(3,)), "moving")
    assert len(values) == len(set(values))
    missing = set(acked) - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost"


def test_group_lag_covers_partitions_the_coordinator_holds_no_replica_of(cluster_factory):
    """RF=1 partitions spread over 3 brokers: the group's coordinator holds a
    replica of at most some of them, yet DescribeGroup (what the operator's
    ConsumerGroup status and HPA metric read) reports the lag of every one."""
    c = cluster_factory(3)
    c.cli("topic", "create", "spread-lag", "--partitions", "3", "--replication-factor", "1")
    leaders = wait_until(
        "3 leaders on 3 brokers",
        lambda: (lambda ls: ls if len(set(ls)) == 3 else None)(
            [c.partition("spread-lag", p)["leader"] for p in range(3)]
        ),
    )
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all"})
    for part in range(3):
        for i in range(10):
            p.produce("spread-lag", value=b"x", partition=part)
    assert p.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "lagged", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("spread-lag", part, 2) for part in range(3)], asynchronous=False)
    consumer.close()
    # Asked through every broker (each forwards to the coordinator).
    for via in c.nodes:
        d = wait_until(
            f"lag of all 3 partitions via broker {via}",
            lambda: (lambda d: d if len(d.get("lag", [])) == 3 else None)(
                c.cli("group", "describe", "lagged", via=via)
            ),
        )
        lag = {l["partition"]: l for l in d["lag"]}
        assert {part: lag[part]["lag"] for part in range(3)} == {0: 8, 1: 8, 2: 8}, (leaders, d)
        assert d["total_lag"] == 24


def test_group_list_through_any_broker_lists_every_coordinators_groups(cluster_factory):
    """Each broker coordinates the groups of the __consumer_offsets partitions it leads;
    `strata group list` asked of any one of them lists the groups of all three."""
    c = cluster_factory(3)
    c.cli("topic", "create", "listed", "--partitions", "1", "--replication-factor", "3")
    # The first group use creates __consumer_offsets; wait until every partition leads.
    probe = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "probe", "enable.auto.commit": False})
    probe.commit(offsets=[TopicPartition("listed", 0, 0)], asynchronous=False)
    probe.close()
    offsets = wait_until(
        "__consumer_offsets led everywhere",
        lambda: (lambda d: d if all(p["leader"] >= 0 for p in d["partition_details"]) else None)(
            c.cli("topic", "describe", "__consumer_offsets")
        ),
    )
    n = offsets["partitions"]
    leader_of = {p["partition"]: p["leader"] for p in offsets["partition_details"]}
    # One group per coordinator, so a broker listing only its own would miss two.
    groups = {}
    for i in range(200):
        name = f"listed-{i}"
        groups.setdefault(leader_of[offsets_partition(name, n)], name)
        if len(groups) == 3:
            break
    assert len(groups) == 3, groups
    for name in groups.values():
        consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": name, "enable.auto.commit": False})
        consumer.commit(offsets=[TopicPartition("listed", 0, 1)], asynchronous=False)
        consumer.close()
    for via in c.nodes:
        listed = wait_until(
            f"all 3 groups listed via broker {via}",
            lambda: (lambda r: r if set(groups.values()) <= {g["group_id"] for g in r.get("groups", [])} else None)(
                c.cli("group", "list", via=via)
            ),
        )
        assert not listed.get("unavailable_brokers"), listed
        states = {g["group_id"]: g["state"] for g in listed["groups"]}
        assert all(states[name] == "Empty" for name in groups.values()), states


def test_a_stopped_learner_is_unregistered_and_may_come_back(cluster_factory):
    """`strata broker unregister` forgets a broker that left for good: refused while it
    runs, for quorum voters and for unknown ids; once it is stopped and fenced it
    leaves the cluster metadata. Started again, it registers anew and follows the
    metadata log (it was removed from the quorum's learners, and is added back)."""
    FENCED = 3
    c = cluster_factory(4, start=[1, 2, 3])
    create_topic(c, "stays")
    c.start([4])
    brokers = lambda: {b["id"]: b for b in c.cli("cluster", "describe")["brokers"]}
    wait_until("broker 4 registered", lambda: 4 in brokers())

    def refused(args, text):
        try:
            c.cli(*args)
        except RuntimeError as e:
            assert text in str(e), e
            return
        raise AssertionError(f"strata {' '.join(args)} was accepted")

    refused(("broker", "unregister", "4"), "still live")
    refused(("broker", "unregister", "2"), "voter")
    refused(("broker", "unregister", "99"), "unknown broker 99")
    c.nodes[4].stop()
    wait_until("broker 4 fenced", lambda: brokers()[4]["state"] == FENCED, timeout=60)
    assert c.cli("broker", "unregister", "4") == {"unregistered": 4}
    assert sorted(brokers()) == [1, 2, 3]
    refused(("broker", "unregister", "4"), "unknown broker 4")
    # The controller drops it from the quorum's learners: no more replication to it.
    quorum = lambda: c.cli("cluster", "describe")
    wait_until("broker 4 no longer a learner", lambda: 4 not in quorum().get("quorum_learners", [4]))
    assert sorted(quorum()["quorum_voters"]) == [1, 2, 3]

    # Back again: registered, and it sees metadata committed while it was away.
    create_topic(c, "while-away")
    c.nodes[4].start()
    wait_until("broker 4 registered again", lambda: brokers().get(4, {}).get("state") == 1, timeout=60)
    wait_until("broker 4 a learner again", lambda: 4 in quorum().get("quorum_learners", []))
    wait_until(
        "broker 4 knows the topic created while it was away",
        lambda: c.partition("while-away", via=4)["leader"] >= 1,
    )


def test_describe_reports_which_brokers_cannot_stop_without_breaking_min_isr(cluster_factory):
    """What the operator's rolling restart reads: a broker's `min_isr_at_risk` counts
    the partitions its stop would take below min.insync.replicas although they have a
    replica to spare; topics with no replica to spare are listed for the cluster."""
    c = cluster_factory(3)
    create_topic(c, "roomy", rf=3, min_isr=2)
    create_topic(c, "tight", rf=2, min_isr=2)
    describe = lambda: c.cli("cluster", "describe")
    d = describe()
    assert d["min_isr_no_spare_topics"] == ["tight"], d
    assert all(b["min_isr_at_risk"] == 0 for b in d["brokers"]), d["brokers"]
    # Broker 3 stops: the ISRs of roomy and of every __consumer_offsets partition
    # (RF 3, min.insync.replicas 2 here) shrink to their minimum, so neither broker 1
    # nor broker 2 may stop now.
    spare_one = 1 + c.cli("topic", "describe", "__consumer_offsets")["partitions"]
    c.nodes[3].stop()
    at_risk = lambda: {b["id"]: b["min_isr_at_risk"] for b in describe()["brokers"]}
    want = {1: spare_one, 2: spare_one, 3: 0}
    wait_until(f"min_isr_at_risk {want}", lambda: at_risk() == want, timeout=60)
    c.nodes[3].start()
    wait_until("roomy in sync again", lambda: set(at_risk().values()) == {0}, timeout=60)


def test_replication_factor_changes_under_load_lose_nothing(cluster_factory):
    """`strata topic set-replication-factor`: 1 → 3 copies the partition to two more
    brokers, 3 → 2 drops one that is not the leader; an acks=all producer keeps
    going throughout and every acknowledged record is read back."""
    c = cluster_factory(3)
    create_topic(c, "grow", rf=1, min_isr=1)
    leader = c.partition("grow")["leader"]
    prod = NumberedProducer(c.bootstrap(), "grow")
    prod.wait_more(300)
    r = c.cli("topic", "set-replication-factor", "grow", "3")
    wait_until("3 replicas in sync",
               lambda: c.cli("topic", "reassignment-status", r["id"])["completed_moves"] == 1, timeout=60)
    part = c.partition("grow")
    assert sorted(part["replicas"]) == [1, 2, 3] and sorted(part["isr"]) == [1, 2, 3], part
    assert c.cli("topic", "describe", "grow")["replication_factor"] == 3
    prod.wait_more(300)
    r = c.cli("topic", "set-replication-factor", "grow", "2")
    wait_until("down to 2 replicas",
               lambda: c.cli("topic", "reassignment-status", r["id"])["completed_moves"] == 1, timeout=60)
    part = c.partition("grow")
    assert len(part["replicas"]) == 2 and part["leader"] in part["replicas"], part
    assert part["leader"] == leader, (leader, part)
    # Already there: nothing to move.
    assert c.cli("topic", "set-replication-factor", "grow", "2")["total_moves"] == 0
    prod.wait_more(200)
    acked, errors = prod.stop()
    assert not errors, errors[:5]
    values = read_partition(c.bootstrap(), "grow")
    missing = set(acked) - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost"


def test_a_consumer_validates_its_position_after_a_leader_change(cluster_factory):
    """KIP-320: after a leader change librdkafka asks the new leader where the epoch
    of its position ends (OffsetForLeaderEpoch) before fetching on; nothing is lost or
    read twice across the change."""
    c = cluster_factory(3)
    create_topic(c, "validate")
    prod = NumberedProducer(c.bootstrap(), "validate")
    prod.wait_more(200)
    consumer = Consumer({
        "bootstrap.servers": c.bootstrap(),
        "group.id": f"validate-{time.time()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "topic.metadata.refresh.interval.ms": 1000,
    })
    seen = []

    def read_until(done, what, timeout=60):
        deadline = time.time() + timeout
        while not done() and time.time() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                seen.append(int(m.value()))
        assert done(), f"{what}: read {len(seen)} records"

    try:
        consumer.assign([TopicPartition("validate", 0, 0)])
        read_until(lambda: len(seen) >= 100, "the first 100")
        leader = c.partition("validate")["leader"]
        c.nodes[leader].kill()
        wait_until(f"a new leader after killing {leader}",
                   lambda: c.partition("validate")["leader"] not in (-1, leader), timeout=30)
        prod.wait_more(100)
        acked, errors = prod.stop()
        assert not errors, errors[:5]
        read_until(lambda: set(acked) <= set(seen), "every acknowledged record", timeout=90)
    finally:
        consumer.close()
    assert len(seen) == len(set(seen)), "a record was read twice"
    missing = set(acked) - set(seen)
    assert not missing, f"{len(missing)} acknowledged records not read, e.g. {sorted(missing)[:10]}"

    def validations():
        total = 0.0
        for n in c.nodes.values():
            if not n.alive():
                continue
            for line in n.metrics().splitlines():
                if line.startswith("strata_request_duration") and "_count" in line.split("{")[0] \
                        and 'api="OffsetForLeaderEpoch"' in line:
                    total += float(line.rsplit(" ", 1)[1])
        return total

    assert validations() > 0, "the consumer never asked OffsetForLeaderEpoch"
