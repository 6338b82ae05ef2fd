"""100,000 keyed records with headers and timestamps through each real client and
each compression codec: per-partition order, keys, values, headers and timestamps
must come back intact."""
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KNewTopic

N = 100_000
PARTITIONS = 3
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000


def record(i):
    key = f"key-{i % 997}".encode()
    value = f"value-{i}-".encode() + bytes([i % 251]) * (i % 50)
    headers = [("seq", str(i).encode()), ("kind", b"test")]
    return key, value, headers, BASE_TS + i


def create_topic_confluent(bootstrap, name):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name]
    fut.result(timeout=30)


def check(received):
    """`received` maps partition -> list of (offset, key, value, headers, ts)."""
    total = sum(len(v) for v in received.values())
    assert total == N, f"expected {N} records, got {total}"
    seen = set()
    for p, recs in received.items():
        offsets = [r[0] for r in recs]
        assert offsets == list(range(len(recs))), f"partition {p}: offsets not contiguous from 0"
        last_seq = -1
        for _, key, value, headers, ts in recs:
            hd = dict(headers)
            i = int(hd["seq"])
            assert i > last_seq, f"partition {p}: order broken at seq {i}"
            last_seq = i
            k, v, h, t = record(i)
            assert key == k and value == v and ts == t, f"record {i} differs"
            assert [(a, bytes(b)) for a, b in headers] == h
            seen.add(i)
    assert len(seen) == N


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_round_trip(broker, codec):
    topic = f"rt-ck-{codec}"
    create_topic_confluent(broker.bootstrap, topic)
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "compression.type": codec,
            "linger.ms": 5,
            "acks": "all",
        }
    )
    errors = []
    for i in range(N):
        k, v, h, ts = record(i)
        while True:
            try:
                p.produce(topic, key=k, value=v, headers=h, timestamp=ts, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                p.poll(0.1)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]

    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
    received = {i: [] for i in range(PARTITIONS)}
    got, deadline = 0, time.time() + 120
    while got < N and time.time() < deadline:
        for m in c.consume(num_messages=5000, timeout=1.0):
            assert m.error() is None, m.error()
            received[m.partition()].append((m.offset(), m.key(), m.value(), m.headers() or [], m.timestamp()[1]))
            got += 1
    c.close()
    check(received)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_round_trip(broker, codec):
    topic = f"rt-kp-{codec}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([KNewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    p = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        compression_type=None if codec == "none" else codec,
        linger_ms=5,
        acks="all",
        batch_size=64 * 1024,
    )
    futures = []
    for i in range(N):
        k, v, h, ts = record(i)
        futures.append(p.send(topic, key=k, value=v, headers=h, timestamp_ms=ts))
    p.flush(120)
    for f in futures[:: max(1, N // 200)]:
        f.get(timeout=30)
    assert all(f.succeeded() for f in futures)
    p.close()

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [KTopicPartition(topic, i) for i in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning()
    received = {i: [] for i in range(PARTITIONS)}
    got, deadline = 0, time.time() + 180
    while got < N and time.time() < deadline:
        for tp, msgs in c.poll(timeout_ms=1000, max_records=10000).items():
            for m in msgs:
                received[tp.partition].append((m.offset, m.key, m.value, m.headers, m.timestamp))
                got += 1
    c.close()
    check(received)


def test_confluent_admin_describe_cluster(broker):
    """librdkafka's DescribeCluster (KIP-700): cluster id, controller, brokers."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    d = admin.describe_cluster(request_timeout=30).result(30)
    assert d.cluster_id
    assert [n.id for n in d.nodes] == [1]
    assert d.nodes[0].port == int(broker.bootstrap.rsplit(":", 1)[1])
    assert d.controller is not None and d.controller.id == 1


def test_confluent_admin_alters_topic_configs(broker):
    """IncrementalAlterConfigs (SET, DELETE, APPEND) and AlterConfigs through
    librdkafka's AdminClient, read back with DescribeConfigs; bad values and broker
    settings are refused with the broker's reason."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, ResourceType)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topic_confluent(broker.bootstrap, "altered")

    def incremental(*entries, resource_type=ResourceType.TOPIC, name="altered"):
        res = ConfigResource(resource_type, name, incremental_configs=list(entries))
        return admin.incremental_alter_configs([res])[res].result(30)

    def current():
        res = ConfigResource(ResourceType.TOPIC, "altered")
        return {k: v.value for k, v in admin.describe_configs([res])[res].result(30).items()}

    incremental(ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET))
    assert current()["retention.ms"] == "3600000"
    assert current()["max.message.bytes"] == "2000000"
    incremental(ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
                ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND))
    after = current()
    assert after["retention.ms"] == "3600000"
    assert after["max.message.bytes"] != "2000000", "deleted: back to the default"
    assert after["cleanup.policy"] == "delete"
    # A bad value is refused whole, with the broker's reason.
    with pytest.raises(KafkaException) as bad:
        incremental(ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET))
    assert "retention.ms" in str(bad.value)
    assert current()["retention.ms"] == "3600000"
    # A broker setting read at startup is refused (dynamic ones: test_broker_configs.py).
    with pytest.raises(KafkaException) as static:
        incremental(ConfigEntry("num.partitions", "2", incremental_operation=AlterConfigOpType.SET),
                    resource_type=ResourceType.BROKER, name="1")
    assert "num.partitions is read at startup" in str(static.value)
    # AlterConfigs replaces the whole set.
    res = ConfigResource(ResourceType.TOPIC, "altered", set_config={"segment.ms": "600000"})
    admin.alter_configs([res])[res].result(30)
    after = current()
    assert after["segment.ms"] == "600000"
    assert after["retention.ms"] != "3600000", "left out of AlterConfigs: back to the default"
