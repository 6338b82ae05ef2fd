"""Exactly-once consume-transform-produce on a 3-broker cluster while the output
partition's leader, the transaction coordinator and the copying process are each
killed -9: the read_committed view of the output is exactly the input, with no
record lost and none duplicated."""
import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from faults.nemesis import offsets_partition
from test_cluster import cluster_factory, create_topic, wait_until  # noqa: F401

COPIER = Path(__file__).parent / "txn_copier.py"
TXN_PARTITIONS = 4


def read_committed(bootstrap, topic, partitions, timeout=90):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"verify-{time.time()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    try:
        ends = {}
        for p in range(partitions):
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        values, done = [], set()
        deadline = time.time() + timeout
        while len(done) < partitions and time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                # Past the last record before the end: control batches close the log.
                for p in range(partitions):
                    pos = c.position([TopicPartition(topic, p)])[0].offset
                    if pos >= ends[p]:
                        done.add(p)
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(m.error())
                continue
            values.append(m.value().decode())
        assert len(done) == partitions, f"read stopped before the end: {done}"
        return values
    finally:
        c.close()


def start_copier(c, tmp_path, total, n):
    log = open(tmp_path / f"copier-{n}.log", "w")
    return subprocess.Popen(
        [sys.executable, str(COPIER), c.bootstrap(), "eos-in", "eos-out", "eos-copier", "eos-copier-tx",
         str(total)],
        stdout=log, stderr=subprocess.STDOUT)


def test_copy_is_exactly_once_through_leader_coordinator_and_copier_kills(cluster_factory, tmp_path):
    os.environ["STRATA_TRANSACTION_STATE_PARTITIONS"] = str(TXN_PARTITIONS)
    try:
        c = cluster_factory(3)
    finally:
        del os.environ["STRATA_TRANSACTION_STATE_PARTITIONS"]
    create_topic(c, "eos-in", partitions=2)
    create_topic(c, "eos-out", partitions=2)
    total = 3000
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "enable.idempotence": True})
    for i in range(total):
        p.produce("eos-in", value=str(i).encode(), partition=i % 2)
    assert p.flush(60) == 0

    copier = start_copier(c, tmp_path, total, 0)
    def copied():
        cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "eos-copier"})
        try:
            got = cons.committed([TopicPartition("eos-in", i) for i in range(2)], timeout=10)
            return sum(max(tp.offset, 0) for tp in got)
        finally:
            cons.close()

    wait_until("the copier committed something", lambda: copied() > 200, timeout=60)

    # (a) the output partition's leader.
    leader = c.partition("eos-out", 0)["leader"]
    c.nodes[leader].kill()
    before = copied()
    wait_until("progress after the output leader died", lambda: copied() > before + 200, timeout=90)
    c.nodes[leader].start(timeout=60)

    # (b) the transaction coordinator of the copier's transactional.id.
    txn_partition = offsets_partition("eos-copier-tx", TXN_PARTITIONS)
    coordinator = c.partition("__transaction_state", txn_partition)["leader"]
    c.nodes[coordinator].kill()
    before = copied()
    wait_until("progress after the coordinator died", lambda: copied() > before + 200, timeout=120)
    c.nodes[coordinator].start(timeout=60)

    # (c) the copier itself, mid-stream.
    copier.kill()
    copier.wait(timeout=10)
    copier = start_copier(c, tmp_path, total, 1)
    rc = copier.wait(timeout=400)
    assert rc == 0, (tmp_path / "copier-1.log").read_text()[-2000:]

    out = read_committed(c.bootstrap(), "eos-out", 2)
    dups = len(out) - len(set(out))
    missing = set(str(i) for i in range(total)) - set(out)
    assert dups == 0, f"{dups} duplicates in the read_committed output"
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
    assert len(out) == total
