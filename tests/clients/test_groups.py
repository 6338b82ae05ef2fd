"""Consumer groups through real clients, each member its own process: partitions are
spread and rebalanced as members join, leave and crash; nothing produced is missed;
committed offsets survive a broker restart; static members come back without a
rebalance; group admin views are right."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).parent
GROUP_ENV = {"STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "500"}


def create(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)


class Member:
    def __init__(self, broker, tmp, name, topic, group, client="confluent", strategy="range", instance=None, session_ms=6000):
        self.name, self.tmp = name, tmp
        cmd = [sys.executable, str(HERE / "group_member.py"), "--client", client, "--bootstrap", broker.bootstrap,
               "--topic", topic, "--group", group, "--strategy", strategy, "--out", str(tmp), "--name", name,
               "--session-ms", str(session_ms)]
        if instance:
            cmd += ["--instance-id", instance]
        self.err = open(tmp / f"{name}.err", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.err, stderr=self.err)

    def assignment(self):
        try:
            return json.loads((self.tmp / f"{self.name}.assign").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"partitions": [], "assigns": 0}

    def consumed(self):
        p = self.tmp / f"{self.name}.log"
        if not p.exists():
            return set()
        out = set()
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.add((int(parts[0]), int(parts[1])))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def spread(members, partitions, sizes):
    """All partitions owned exactly once, with the given per-member counts."""
    owned = [m.assignment()["partitions"] for m in members]
    flat = sorted(p for o in owned for p in o)
    return flat == list(range(partitions)) and sorted(len(o) for o in owned) == sorted(sizes)


class Load:
    """Produces numbered records to every partition until stopped; remembers what was acked."""

    def __init__(self, broker, topic):
        self.acked = set()
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.run, args=(broker.bootstrap, topic))
        self.t.start()

    def run(self, bootstrap, topic):
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

        def cb(err, msg):
            if err is None:
                with self.lock:
                    self.acked.add((msg.partition(), msg.offset()))

        i = 0
        while not self.stop_ev.is_set() and i < 200_000:
            try:
                p.produce(topic, key=str(i).encode(), value=b"v%d" % i, on_delivery=cb)
                i += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            time.sleep(0.002)
        p.flush(30)

    def stop(self):
        self.stop_ev.set()
        self.t.join(60)
        return set(self.acked)


@pytest.mark.parametrize(
    "client,strategy",
    [("confluent", "range"), ("confluent", "cooperative-sticky"), ("kafka-python", "range")],
)
def test_members_join_crash_and_nothing_is_lost(broker_factory, tmp_path, client, strategy):
    broker = broker_factory(GROUP_ENV)
    topic, group = f"grp-{client}-{strategy}", f"g-{client}-{strategy}"
    create(broker.bootstrap, topic, 6)
    load = Load(broker, topic)
    members = [Member(broker, tmp_path, f"m{i}", topic, group, client, strategy) for i in range(3)]
    try:
        wait_for(lambda: spread(members, 6, [2, 2, 2]), 60, "3 members with 2 partitions each")
        members.append(Member(broker, tmp_path, "m3", topic, group, client, strategy))
        wait_for(lambda: spread(members, 6, [1, 1, 2, 2]), 60, "rebalance to 4 members")
        victim = members.pop(1)
        victim.kill()
        wait_for(lambda: spread(members, 6, [2, 2, 2]), 60, "the crashed member's partitions reassigned")
        produced = load.stop()
        assert len(produced) > 1000

        def all_consumed():
            seen = set()
            for m in members + [victim]:
                seen |= m.consumed()
            return produced <= seen

        wait_for(all_consumed, 60, "every produced record consumed")
    finally:
        load.stop()
        for m in members:
            m.stop()


def test_committed_offsets_survive_broker_restart(broker_factory, tmp_path):
    broker = broker_factory(GROUP_ENV)
    create(broker.bootstrap, "resume", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        p.produce("resume", value=b"%d" % i, partition=0)
    p.flush(30)
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": "resumer", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    c = Consumer(conf)
    c.subscribe(["resume"])
    got = []
    deadline = time.time() + 30
    while len(got) < 40 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.offset())
    c.commit(offsets=[TopicPartition("resume", 0, 40)], asynchronous=False)
    c.close()
    broker.stop()
    broker.start()
    c = Consumer(conf)
    c.subscribe(["resume"])
    first = None
    deadline = time.time() + 30
    while first is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            first = m.offset()
    committed = c.committed([TopicPartition("resume", 0)], timeout=10)[0].offset
    c.close()
    assert first == 40
    assert committed == 40


def test_static_member_restart_keeps_partitions_without_rebalancing_others(broker_factory, tmp_path):
    broker = broker_factory(GROUP_ENV)
    create(broker.bootstrap, "static", 4)
    a = Member(broker, tmp_path, "a", "static", "sg", instance="inst-a", session_ms=15000)
    b = Member(broker, tmp_path, "b", "static", "sg", instance="inst-b", session_ms=15000)
    try:
        wait_for(lambda: spread([a, b], 4, [2, 2]), 60, "two static members with 2 partitions each")
        time.sleep(2)
        before_a = a.assignment()
        before_b = b.assignment()["partitions"]
        # A static member closing does not leave the group; it comes back in time.
        b.stop()
        b = Member(broker, tmp_path, "b", "static", "sg", instance="inst-b", session_ms=15000)
        wait_for(lambda: b.assignment()["partitions"] == before_b, 30, "inst-b to get its partitions back")
        time.sleep(3)
        after_a = a.assignment()
        assert after_a["partitions"] == before_a["partitions"]
        assert after_a["assigns"] == before_a["assigns"], "the other member was rebalanced"
    finally:
        a.stop()
        b.stop()


def test_group_admin_views(broker_factory, tmp_path):
    broker = broker_factory(GROUP_ENV)
    create(broker.bootstrap, "views", 2)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(50):
        p.produce("views", value=b"x", partition=i % 2)
    p.flush(30)
    m = Member(broker, tmp_path, "solo", "views", "viewers")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        wait_for(lambda: spread([m], 2, [2]) and len(m.consumed()) == 50, 60, "the member to consume everything")
        time.sleep(1)
        listed = admin.list_consumer_groups().result(10).valid
        mine = [g for g in listed if g.group_id == "viewers"]
        assert mine and str(mine[0].state).endswith("STABLE"), listed
        desc = admin.describe_consumer_groups(["viewers"])["viewers"].result(10)
        assert len(desc.members) == 1
        assert sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions) == [0, 1]
        assert desc.partition_assignor == "range"
        offs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("viewers")])["viewers"].result(10)
        assert sorted((tp.partition, tp.offset) for tp in offs.topic_partitions) == [(0, 25), (1, 25)]
        assert 'strata_consumergroup_lag{group="viewers",partition="0",topic="views"' in broker.metrics()
    finally:
        m.stop()
    # After the member left, the group is Empty and can be deleted.
    wait_for(lambda: any(str(g.state).endswith("EMPTY") for g in admin.list_consumer_groups().result(10).valid
                         if g.group_id == "viewers"), 30, "group to become empty")
    admin.delete_consumer_groups(["viewers"])["viewers"].result(10)
    assert all(g.group_id != "viewers" for g in admin.list_consumer_groups().result(10).valid)
