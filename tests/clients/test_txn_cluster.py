"""Exactly-once consume-transform-produce on a 3-broker cluster while the output
partition's leader, the transaction coordinator and the copying process are each
killed -9: the read_committed view of the output is exactly the input, with no
record lost and none duplicated.

A killed broker is restarted once its partition has failed over, as a Kubernetes pod
would be. Left down for good it leaves the cluster's metadata, and librdkafka (2.16)
then can block in send_offsets_to_transaction() past its timeout when that broker was
also the group's coordinator: it keeps waiting on the cached, decommissioned
coordinator (librdkafka issues #5511, #5456; Apache Kafka triggers it the same way).
The restarted broker's return unblocks it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import watermarks
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
            _, high = watermarks(c, TopicPartition(topic, p))
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


@pytest.fixture
def copiers():
    """The copier processes a test starts, killed when it ends however it ends."""
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start_copier(c, tmp_path, total, n, copiers):
    log = open(tmp_path / f"copier-{n}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(COPIER), c.bootstrap(), "eos-in", "eos-out", "eos-copier", "eos-copier-tx",
         str(total)],
        stdout=log, stderr=subprocess.STDOUT)
    copiers.append(proc)
    return proc


def test_copy_is_exactly_once_through_leader_coordinator_and_copier_kills(cluster_factory, tmp_path, copiers):
    os.environ["STRATA_TRANSACTION_STATE_PARTITIONS"] = str(TXN_PARTITIONS)
    try:
        c = cluster_factory(3)
    finally:
        del os.environ["STRATA_TRANSACTION_STATE_PARTITIONS"]
    create_topic(c, "eos-in", partitions=2)
    create_topic(c, "eos-out", partitions=2)
    # The input is written in waves around the faults, so each fault lands while
    # the copier has records to copy, and records written after it can only be
    # copied once the cluster has failed over. The copier exits once all are.
    wave = 500
    total = 8 * wave
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 120000})
    written = [0]

    def feed(n):
        for i in range(written[0], written[0] + n):
            p.produce("eos-in", value=str(i).encode(), partition=i % 2)
        assert p.flush(120) == 0
        written[0] += n

    feed(2 * wave)
    copier = start_copier(c, tmp_path, total, 0, copiers)
    def copied():
        cons = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "eos-copier"})
        try:
            got = cons.committed([TopicPartition("eos-in", i) for i in range(2)], timeout=10)
            return sum(max(tp.offset, 0) for tp in got)
        finally:
            cons.close()

    def caught_up(what, timeout=90):
        # Everything written so far is copied (and its offsets committed).
        try:
            wait_until(what, lambda: copied() >= written[0], timeout=timeout)
        except AssertionError as e:
            copier.send_signal(signal.SIGUSR1)  # its stacks, into its log
            time.sleep(1)
            log = (tmp_path / "copier-0.log").read_text()
            raise AssertionError(f"{e}; copier log:\n{log[-6000:]}") from None

    caught_up("the copier copied the first records", timeout=60)

    def kill_and_restart(node, what, topic, partition):
        # Killed -9 while the copier works on a fresh wave; restarted, as its pod
        # would be, once the partition has failed over to another broker; then
        # more records, which only the failed-over cluster can have copied.
        feed(wave)
        c.nodes[node].kill()
        wait_until(f"{what} moved off broker {node}",
                   lambda: c.partition(topic, partition)["leader"] not in (node, -1), timeout=60)
        c.nodes[node].start(timeout=60)
        feed(wave)
        caught_up(f"the copy after {what} died")

    # (a) the output partition's leader.
    kill_and_restart(c.partition("eos-out", 0)["leader"], "the output leader", "eos-out", 0)

    # (b) the transaction coordinator of the copier's transactional.id.
    txn_partition = offsets_partition("eos-copier-tx", TXN_PARTITIONS)
    kill_and_restart(c.partition("__transaction_state", txn_partition)["leader"],
                     "the transaction coordinator", "__transaction_state", txn_partition)

    # (c) the copier itself, while it copies a fresh wave.
    feed(wave)
    copier.kill()
    copier.wait(timeout=10)
    feed(total - written[0])
    copier = start_copier(c, tmp_path, total, 1, copiers)
    rc = copier.wait(timeout=400)
    assert rc == 0, (tmp_path / "copier-1.log").read_text()[-2000:]

    out = read_committed(c.bootstrap(), "eos-out", 2)
    dups = len(out) - len(set(out))
    missing = set(str(i) for i in range(total)) - set(out)
    assert dups == 0, f"{dups} duplicates in the read_committed output"
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
    assert len(out) == total


def test_strata_cli_lists_describes_and_aborts_transactions_through_any_broker(cluster_factory):
    os.environ["STRATA_TRANSACTION_STATE_PARTITIONS"] = str(TXN_PARTITIONS)
    try:
        c = cluster_factory(3)
    finally:
        del os.environ["STRATA_TRANSACTION_STATE_PARTITIONS"]
    create_topic(c, "cli-txn", partitions=2)
    txn_id = "cli-open-tx"
    p = Producer({"bootstrap.servers": c.bootstrap(), "transactional.id": txn_id,
                  "transaction.timeout.ms": 60000, "linger.ms": 0})
    p.init_transactions(60)
    p.begin_transaction()
    for i in range(10):
        p.produce("cli-txn", value=f"open-{i}".encode(), partition=i % 2)
    assert p.flush(30) == 0
    coordinator = c.partition("__transaction_state", offsets_partition(txn_id, TXN_PARTITIONS))["leader"]
    elsewhere = next(i for i in c.nodes if i != coordinator)

    # Listed by every coordinator through the fan-out, from a broker that is not its own.
    listed = c.cli("txn", "list", "--state", "Ongoing", via=elsewhere)
    assert listed["unavailable_brokers"] == []
    [t] = [t for t in listed["transactions"] if t["transactional_id"] == txn_id]
    assert t["state"] == "Ongoing" and t["coordinator"] == coordinator
    assert not [t for t in c.cli("txn", "list", "--state", "Empty", via=elsewhere)["transactions"]
                if t["transactional_id"] == txn_id]

    # Described at its coordinator (forwarded there).
    d = c.cli("txn", "describe", txn_id, via=elsewhere)
    assert d["state"] == "Ongoing" and d["coordinator"] == coordinator
    assert sorted((x["topic"], x["partition"]) for x in d["partitions"]) == [("cli-txn", 0), ("cli-txn", 1)]
    assert d["start_time_ms"] > 0

    # Aborted: the producer is fenced, the records never become visible, and the
    # markers leave the partitions readable to read_committed consumers.
    aborted = c.cli("txn", "abort", txn_id, via=elsewhere)
    assert aborted["state"] == "PrepareAbort" and aborted["producer_epoch"] == d["producer_epoch"] + 1
    wait_until("the abort completes",
               lambda: c.cli("txn", "describe", txn_id)["state"] == "CompleteAbort", timeout=30)
    with pytest.raises(KafkaException) as fenced:
        p.commit_transaction(30)
    assert fenced.value.args[0].fatal(), fenced.value.args[0]
    assert read_committed(c.bootstrap(), "cli-txn", 2, timeout=30) == []

    # Nothing left to abort; an unknown id is not found.
    with pytest.raises(RuntimeError, match="FailedPrecondition"):
        c.cli("txn", "abort", txn_id, via=elsewhere)
    with pytest.raises(RuntimeError, match="NotFound"):
        c.cli("txn", "describe", "no-such-transactional-id", via=elsewhere)
