"""Transactions with librdkafka (confluent-kafka): committed transactions are visible
to read_committed consumers, aborted ones only to read_uncommitted ones, interleaved
transactions on shared partitions stay separate, a new producer instance fences the
old one, and offsets sent to a transaction become the group's only when it commits."""
import re
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, name, partitions=3):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in fs.values():
        f.result(timeout=30)


def txn_producer(bootstrap, txn_id, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
        "transaction.timeout.ms": 60000,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def read_all(bootstrap, topic, isolation, expect_at_least=0, timeout=30, group=None):
    """Every (partition, key, value) a consumer with `isolation` reads from the start,
    until `expect_at_least` records arrived and the log end is reached."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    c.subscribe([topic])
    out = []
    eof = set()
    deadline = time.time() + timeout
    parts = None
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if parts is None:
                assignment = c.assignment()
                if assignment:
                    parts = {tp.partition for tp in assignment}
            if m is None:
                if parts and eof >= parts and len(out) >= expect_at_least:
                    break
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    if parts and eof >= parts and len(out) >= expect_at_least:
                        break
                    continue
                raise KafkaException(m.error())
            eof.discard(m.partition())
            out.append((m.partition(), m.key(), m.value()))
    finally:
        c.close()
    return out


def test_committed_transactions_are_visible_and_aborted_ones_are_not(broker):
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic)
    p = txn_producer(broker.bootstrap, f"tx-{uuid.uuid4()}")
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, key=b"c%d" % i, value=b"committed-%d" % i, partition=i % 3)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(20):
        p.produce(topic, key=b"a%d" % i, value=b"aborted-%d" % i, partition=i % 3)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=b"d%d" % i, value=b"second-%d" % i, partition=i % 3)
    p.commit_transaction(30)

    committed = read_all(broker.bootstrap, topic, "read_committed", expect_at_least=40)
    values = sorted(v for _, _, v in committed)
    assert values == sorted([b"committed-%d" % i for i in range(30)] + [b"second-%d" % i for i in range(10)])
    uncommitted = read_all(broker.bootstrap, topic, "read_uncommitted", expect_at_least=60)
    assert len(uncommitted) == 60
    assert sum(1 for _, _, v in uncommitted if v.startswith(b"aborted-")) == 20

    # The coordinator counted them.
    text = urllib.request.urlopen(f"http://{broker.host}:{broker.metrics_port}/metrics").read().decode()
    counts = dict(re.findall(r'strata_transactions_total\{[^}]*outcome="(\w+)"[^}]*\} (\d+)', text))
    assert counts.get("committed") == "2" and counts.get("aborted") == "1", counts
    assert counts.get("started") == "3", counts


def test_an_open_transaction_holds_read_committed_consumers_back(broker):
    topic = f"txn-open-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    p = txn_producer(broker.bootstrap, f"tx-{uuid.uuid4()}")
    p.begin_transaction()
    p.produce(topic, value=b"in-txn", partition=0)
    p.flush(30)
    # Written after the transaction's first record, so behind the last stable offset.
    plain.produce(topic, value=b"after", partition=0)
    plain.flush(30)
    seen = read_all(broker.bootstrap, topic, "read_committed", timeout=8)
    assert seen == []
    p.commit_transaction(30)
    seen = read_all(broker.bootstrap, topic, "read_committed", expect_at_least=2)
    assert [v for _, _, v in seen] == [b"in-txn", b"after"]


def test_interleaved_transactions_on_shared_partitions_stay_separate(broker):
    topic = f"txn-mix-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=2)
    a = txn_producer(broker.bootstrap, f"tx-a-{uuid.uuid4()}")
    b = txn_producer(broker.bootstrap, f"tx-b-{uuid.uuid4()}")
    for round_ in range(3):
        a.begin_transaction()
        b.begin_transaction()
        for i in range(10):
            a.produce(topic, value=b"a-%d-%d" % (round_, i), partition=i % 2)
            b.produce(topic, value=b"b-%d-%d" % (round_, i), partition=i % 2)
            if i % 3 == 0:
                a.flush(30)
                b.flush(30)
        a.flush(30)
        b.flush(30)
        # a commits, b aborts: b's records sit between a's in both partitions.
        b.abort_transaction(30)
        a.commit_transaction(30)
    seen = read_all(broker.bootstrap, topic, "read_committed", expect_at_least=30)
    values = sorted(v for _, _, v in seen)
    assert values == sorted(b"a-%d-%d" % (r, i) for r in range(3) for i in range(10))


def test_a_new_instance_fences_the_old_and_aborts_its_open_transaction(broker):
    topic = f"txn-fence-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=1)
    txn_id = f"tx-{uuid.uuid4()}"
    old = txn_producer(broker.bootstrap, txn_id)
    old.begin_transaction()
    old.produce(topic, value=b"zombie", partition=0)
    old.flush(30)
    new = txn_producer(broker.bootstrap, txn_id)
    # The old instance's transaction was aborted, and it can no longer commit.
    with pytest.raises(KafkaException) as err:
        old.commit_transaction(30)
    assert err.value.args[0].fatal() or err.value.args[0].code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    )
    new.begin_transaction()
    new.produce(topic, value=b"fresh", partition=0)
    new.commit_transaction(30)
    seen = read_all(broker.bootstrap, topic, "read_committed", expect_at_least=1)
    assert [v for _, _, v in seen] == [b"fresh"]


def committed_offsets(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def test_offsets_sent_to_a_transaction_count_only_when_it_commits(broker):
    src = f"txn-src-{uuid.uuid4().hex[:8]}"
    dst = f"txn-dst-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, src, partitions=1)
    create_topic(broker.bootstrap, dst, partitions=1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        plain.produce(src, value=b"in-%d" % i, partition=0)
    plain.flush(30)
    group = f"copier-{uuid.uuid4()}"
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([src])
    got = []
    deadline = time.time() + 30
    while len(got) < 20 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    assert len(got) == 20
    p = txn_producer(broker.bootstrap, f"copier-tx-{uuid.uuid4()}")
    # First half in a transaction that aborts: its offsets must not count.
    p.begin_transaction()
    for m in got[:10]:
        p.produce(dst, value=m.value(), partition=0)
    p.send_offsets_to_transaction(
        [TopicPartition(src, 0, got[9].offset() + 1)], consumer.consumer_group_metadata(), 30
    )
    p.abort_transaction(30)
    assert committed_offsets(broker.bootstrap, group, src, 1)[0] < 0
    # Then everything in one that commits.
    p.begin_transaction()
    for m in got:
        p.produce(dst, value=m.value(), partition=0)
    p.send_offsets_to_transaction(
        [TopicPartition(src, 0, got[-1].offset() + 1)], consumer.consumer_group_metadata(), 30
    )
    p.commit_transaction(30)
    consumer.close()
    deadline = time.time() + 15
    while committed_offsets(broker.bootstrap, group, src, 1)[0] != 20 and time.time() < deadline:
        time.sleep(0.2)
    assert committed_offsets(broker.bootstrap, group, src, 1)[0] == 20
    seen = read_all(broker.bootstrap, dst, "read_committed", expect_at_least=20)
    assert [v for _, _, v in seen] == [b"in-%d" % i for i in range(20)]
