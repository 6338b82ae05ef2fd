"""Restarts and crashes: data survives a clean restart with offsets continuing, a
kill -9 under an acks=1 producer loses no acknowledged record and leaves no garbage,
and a full disk stops the broker cleanly, with nothing acknowledged lost."""
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BrokerProcess
from faults.cluster import Disk, tmpfs_usable


def create(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})])[
        name
    ].result(30)


def consume_all(bootstrap, topic, partition=0, expect=None, timeout=60):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "x", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    out, deadline, idle = [], time.time() + timeout, 0
    while time.time() < deadline:
        msgs = c.consume(num_messages=10000, timeout=0.5)
        if not msgs:
            idle += 1
            if expect is None and idle >= 4 or expect is not None and len(out) >= expect:
                break
            continue
        idle = 0
        for m in msgs:
            assert m.error() is None, m.error()
            out.append((m.offset(), m.value()))
    c.close()
    return out


def produce_n(bootstrap, topic, values):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0


def test_clean_restart_keeps_data_and_offsets_continue(broker):
    create(broker.bootstrap, "restart", config={"segment.bytes": "4096"})
    produce_n(broker.bootstrap, "restart", [f"a{i}".encode() for i in range(2000)])
    assert broker.stop() == 0
    broker.start()
    produce_n(broker.bootstrap, "restart", [f"b{i}".encode() for i in range(100)])
    got = consume_all(broker.bootstrap, "restart", expect=2100)
    assert [o for o, _ in got] == list(range(2100))
    assert [v for _, v in got] == [f"a{i}".encode() for i in range(2000)] + [f"b{i}".encode() for i in range(100)]


def test_kill_9_loses_no_acknowledged_record(broker):
    create(broker.bootstrap, "crash", config={"segment.bytes": "65536"})
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def on_delivery(err, msg):
        if err is None:
            with lock:
                acked[msg.value()] = msg.offset()

    def run():
        p = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "acks": "1",
                "linger.ms": 1,
                "message.timeout.ms": 3000,
                "reconnect.backoff.max.ms": 200,
            }
        )
        i = 0
        while not stop.is_set() and i < 1_000_000:
            try:
                p.produce("crash", value=f"rec-{i:07d}".encode() * 4, partition=0, on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0)
        p.flush(10)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 30
    while len(acked) < 20000 and time.time() < deadline:
        time.sleep(0.05)
    assert len(acked) >= 20000, "producer made no progress"
    broker.kill()
    with lock:
        acked_at_kill = dict(acked)
    stop.set()
    t.join(30)
    broker.start()
    got = consume_all(broker.bootstrap, "crash")
    by_value = {v: o for o, v in got}
    # Every acknowledged record is there, at the offset it was acknowledged with.
    missing = [v for v, o in acked_at_kill.items() if by_value.get(v) != o]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"
    # No garbage: offsets contiguous, every value well-formed.
    assert [o for o, _ in got] == list(range(len(got)))
    assert all(v.startswith(b"rec-") and len(v) == 44 for _, v in got)
    # The broker accepts new writes after recovery, at the next offset.
    produce_n(broker.bootstrap, "crash", [b"after-crash"])
    tail = consume_all(broker.bootstrap, "crash")
    assert tail[-1] == (len(got), b"after-crash")


def test_a_full_disk_stops_the_broker_without_a_panic_and_a_restart_recovers(tmp_path):
    """The metadata log lives in the data dir: when the disk fills, the broker's next
    metadata write fails and the broker exits with code 1 and the reason, without a
    panic (a runtime torn down under running tasks used to panic there); once space
    is freed it starts again with every acknowledged record."""
    usable, why = tmpfs_usable(tmp_path)
    if not usable:
        pytest.skip(f"needs a tmpfs of its own: {why}")
    disk = Disk(tmp_path / "disk", 48)
    b = BrokerProcess(disk.data_dir)
    b.log_path = tmp_path / "broker.log"  # off the full disk, so the reason is kept
    try:
        b.start()
        create(b.bootstrap, "full")
        acked = [f"v{i}".encode() for i in range(300)]
        produce_n(b.bootstrap, "full", acked)
        disk.fill()
        # Keep it writing: produce fails (KAFKA_STORAGE_ERROR) and heartbeats reach the
        # metadata log, whose failed write stops the broker.
        p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 5000})
        deadline = time.time() + 60
        while b.alive() and time.time() < deadline:
            p.produce("full", value=b"x" * 1000, partition=0)
            p.poll(0.1)
        assert not b.alive(), "the broker kept running on a full disk"
        assert b.proc.returncode == 1, b.proc.returncode
        log = b.log_path.read_text()
        assert "No space left on device" in log, log[-3000:]
        assert "panicked" not in log, log[-3000:]

        disk.empty()
        b.start()
        got = [v for _, v in consume_all(b.bootstrap, "full", expect=len(acked))]
        assert got[: len(acked)] == acked
    finally:
        b.kill()
        disk.close()
