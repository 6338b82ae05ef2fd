"""Compacted topics through a real client (confluent-kafka): the log cleaner leaves
only the latest value of every live key, and no tombstoned key, at the offsets the
records were written at, while a producer keeps writing; records without a key are
refused; the compaction configs are described and changeable; remote storage is
refused on a compacted topic."""
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)

TOPIC = "compacted"
KEYS = 40
VERSIONS = 25
DELETED = range(0, 10)  # keys tombstoned after their last version


def read_partition(bootstrap, topic):
    """Every record of partition 0 from its start to the high watermark:
    a list of (offset, key, value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, low)])
        out = []
        deadline = time.time() + 30
        while (not out or out[-1][0] < high - 1) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                # Offsets at the end may have been cleaned away: the position tells.
                pos = c.position([TopicPartition(topic, 0)])[0].offset
                if pos >= high:
                    break
                continue
            if m.error():
                raise KafkaException(m.error())
            if m.offset() >= high:
                break
            out.append((m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


def test_cleaner_keeps_the_latest_value_per_live_key_while_writes_go_on(broker_factory):
    broker = broker_factory({"STRATA_LOG_CLEANER_BACKOFF_MS": "200"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    cfg = {
        "cleanup.policy": "compact",
        "segment.bytes": "4096",
        "segment.ms": "300",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
    }
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1, config=cfg)])[TOPIC].result(30)

    written = {}  # key -> (offset, value) of its latest write, from delivery reports
    lock = threading.Lock()

    def delivered(err, msg):
        assert err is None, err
        with lock:
            written[msg.key()] = (msg.offset(), msg.value())

    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for v in range(VERSIONS):
        for k in range(KEYS):
            p.produce(TOPIC, key=b"k%d" % k, value=b"k%d-v%d" % (k, v), partition=0, on_delivery=delivered)
        p.flush(30)
    for k in DELETED:
        p.produce(TOPIC, key=b"k%d" % k, value=None, partition=0, on_delivery=delivered)
    assert p.flush(30) == 0

    # A producer that keeps writing (its own keys) while the cleaner works, so the
    # segments above keep closing and being cleaned under it.
    stop = threading.Event()

    def keep_writing():
        n = 0
        bg = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        while not stop.is_set():
            bg.produce(TOPIC, key=b"live-%d" % (n % 5), value=b"%d" % n, partition=0, on_delivery=delivered)
            bg.poll(0)
            n += 1
            if n % 50 == 0:
                bg.flush(10)
        assert bg.flush(30) == 0

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        want = {b"k%d" % k: written[b"k%d" % k] for k in range(KEYS) if k not in DELETED}
        deleted = {b"k%d" % k for k in DELETED}
        records = []
        deadline = time.time() + 90
        while time.time() < deadline:
            records = read_partition(broker.bootstrap, TOPIC)
            ours = [(o, k, v) for o, k, v in records if k.startswith(b"k")]
            if sorted((k, (o, v)) for o, k, v in ours) == sorted(want.items()):
                break
            time.sleep(0.2)
        ours = [(o, k, v) for o, k, v in records if k.startswith(b"k")]
        keys = [k for _, k, _ in ours]
        assert len(keys) == len(set(keys)), f"a key appears more than once: {len(keys)} records"
        assert not deleted & set(keys), "a tombstoned key is still there"
        assert {k: (o, v) for o, k, v in ours} == want, "not only the latest value per live key"
    finally:
        stop.set()
        writer.join(60)
    # The concurrent writer's keys: the latest value of each is in the log, at the
    # offset it was acknowledged with.
    records = read_partition(broker.bootstrap, TOPIC)
    latest = {}
    for o, k, v in records:
        latest[k] = (o, v)
    for k in (b"live-%d" % i for i in range(5)):
        assert latest[k] == written[k]
    metrics = broker.metrics()
    assert "strata_cleaner_records_removed_total" in metrics
    assert "strata_cleaner_dirty_ratio" in metrics


def test_compacted_topic_refuses_records_without_a_key_and_delete_records(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("keyed", 1, 1, config={"cleanup.policy": "compact"})])["keyed"].result(30)
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
    p.produce("keyed", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    # Flushed alone: the whole batch holding a keyless record is refused.
    assert p.flush(30) == 0
    p.produce("keyed", key=b"k", value=b"keyed", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD, errors
    assert errors[1] is None
    # DeleteRecords would remove latest values: refused on a `compact`-only topic.
    [fut] = admin.delete_records([TopicPartition("keyed", 0, 1)]).values()
    with pytest.raises(KafkaException) as e:
        fut.result(30)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION


def test_compaction_configs_are_described_validated_and_changeable(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("cfg", 1, 1, config={"cleanup.policy": "compact,delete"})])["cfg"].result(30)
    res = ConfigResource(ResourceType.TOPIC, "cfg")
    desc = admin.describe_configs([res])[res].result(30)
    assert desc["cleanup.policy"].value == "compact,delete"
    assert desc["min.cleanable.dirty.ratio"].value == "0.5"
    assert desc["min.cleanable.dirty.ratio"].is_default
    assert desc["delete.retention.ms"].value == "86400000"
    assert desc["max.compaction.lag.ms"].value == "9223372036854775807"

    change = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "0.2", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([change])[change].result(30)
    desc = admin.describe_configs([res])[res].result(30)
    assert desc["min.cleanable.dirty.ratio"].value == "0.2"
    assert not desc["min.cleanable.dirty.ratio"].is_default

    bad = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "2", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([bad])[bad].result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG

    # Remote storage is refused on a compacted topic, at creation and on a change.
    f = admin.create_topics([NewTopic("tiered-compacted", 1, 1, config={
        "cleanup.policy": "compact", "remote.storage.enable": "true"})])["tiered-compacted"]
    with pytest.raises(KafkaException) as e:
        f.result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "not supported on compacted topics" in e.value.args[0].str()
    tier = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("remote.storage.enable", "true", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([tier])[tier].result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    # `strata-broker dev` tiers topics by default: such a topic cannot become compacted.
    admin.create_topics([NewTopic("plain", 1, 1)])["plain"].result(30)
    compact = ConfigResource(ResourceType.TOPIC, "plain", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([compact])[compact].result(30)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "tiered" in e.value.args[0].str()


def test_every_replica_cleans_to_the_same_latest_values_and_a_new_leader_serves_them(tmp_path):
    from test_cluster import Cluster, wait_until

    c = Cluster(tmp_path, 3)
    for n in c.nodes.values():
        n.env["STRATA_LOG_CLEANER_BACKOFF_MS"] = "200"
    try:
        c.start()
        admin = AdminClient({"bootstrap.servers": c.bootstrap()})
        cfg = {
            "cleanup.policy": "compact",
            "segment.bytes": "4096",
            "segment.ms": "300",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100",
            "min.insync.replicas": "2",
        }
        admin.create_topics([NewTopic("replicated", 1, 3, config=cfg)])["replicated"].result(30)
        wait_until("all replicas in sync", lambda: len(c.partition("replicated")["isr"]) == 3)
        written = {}

        def delivered(err, msg):
            assert err is None, err
            written[msg.key()] = (msg.offset(), msg.value())

        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5})
        for v in range(20):
            for k in range(20):
                p.produce("replicated", key=b"k%d" % k, value=b"%d" % v, partition=0, on_delivery=delivered)
            p.flush(30)
        for k in range(5):
            p.produce("replicated", key=b"k%d" % k, value=None, partition=0, on_delivery=delivered)
        assert p.flush(30) == 0
        want = {b"k%d" % k: written[b"k%d" % k] for k in range(5, 20)}

        # Later writes close the segments above, so that all of them are cleanable.
        def cleaned():
            p.produce("replicated", key=b"tail", value=b"x", partition=0, on_delivery=delivered)
            p.flush(30)
            recs = read_partition(c.bootstrap(), "replicated")
            ours = [(k, (o, v)) for o, k, v in recs if k.startswith(b"k")]
            return sorted(ours) == sorted(want.items())

        wait_until("the leader's log is cleaned", cleaned, timeout=90)
        leader = c.partition("replicated")["leader"]
        c.nodes[leader].kill()
        wait_until("a new leader", lambda: c.partition("replicated")["leader"] not in (-1, leader), timeout=30)
        # The new leader cleaned its own copy (or does now): the same records, at
        # the same offsets.
        wait_until("the new leader's log is cleaned", cleaned, timeout=90)
    finally:
        c.stop_all()
