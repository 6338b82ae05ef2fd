"""DeleteRecords through librdkafka's AdminClient and the `strata` CLI: the log start
moves to the requested offset (a consumer from earliest starts there), whole
segments below it leave the disk, the new start survives a restart, past the high
watermark is OFFSET_OUT_OF_RANGE, and in a 3-broker cluster the followers follow."""
import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import CLI, cluster_factory, wait_until  # noqa: F401 - fixture


def produce(bootstrap, topic, n, partition=0):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "batch.num.messages": 10})
    for i in range(n):
        p.produce(topic, value=(str(i) * 50).encode(), partition=partition)
    assert p.flush(30) == 0


def first_from_earliest(bootstrap, topic, partition=0):
    """The first offset a new consumer with auto.offset.reset=earliest reads."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"first-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        deadline = time.time() + 30
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None and m.partition() == partition:
                return m.offset()
        raise AssertionError("nothing consumed")
    finally:
        c.close()


def watermarks(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def test_admin_client_delete_records_moves_the_log_start_for_good(broker):
    bs = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("dr", num_partitions=1, replication_factor=1,
                                  config={"segment.bytes": "4096"})])["dr"].result(30)
    produce(bs, "dr", 500)
    seg_dir = broker.data_dir / "dr-0"
    segments = len(list(seg_dir.glob("*.log")))
    assert segments > 3

    [fut] = admin.delete_records([TopicPartition("dr", 0, 205)]).values()
    assert fut.result(30).low_watermark == 205
    assert watermarks(bs, "dr") == (205, 500)
    assert first_from_earliest(bs, "dr") == 205
    # Whole segments below the new start are gone from disk; the one holding it stays.
    left = sorted(int(f.stem) for f in seg_dir.glob("*.log"))
    assert len(left) < segments and left[0] <= 205, left

    # Lower offsets change nothing; past the high watermark is refused.
    [fut] = admin.delete_records([TopicPartition("dr", 0, 100)]).values()
    assert fut.result(30).low_watermark == 205
    [fut] = admin.delete_records([TopicPartition("dr", 0, 501)]).values()
    with pytest.raises(KafkaException) as e:
        fut.result(30)
    assert e.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE

    # The new start survives a restart.
    broker.stop()
    broker.start()
    assert watermarks(bs, "dr") == (205, 500)
    assert first_from_earliest(bs, "dr") == 205

    # The strata CLI, with -1: everything up to the high watermark.
    out = subprocess.run([str(CLI), "--admin", broker.admin, "topic", "delete-records", "dr", "0",
                          "--offset", "-1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "dr-0: log start offset 500", out.stdout
    assert watermarks(bs, "dr") == (500, 500)
    refused = subprocess.run([str(CLI), "--admin", broker.admin, "topic", "delete-records",
                              "__consumer_offsets", "0", "--offset", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "internal topics" in refused.stderr, refused.stderr


def test_followers_follow_the_deleted_log_start(cluster_factory):
    c = cluster_factory(3)
    c.cli("topic", "create", "drc", "--partitions", "1", "--replication-factor", "3",
          "--config", "min.insync.replicas=2", "--config", "segment.bytes=4096")
    wait_until("all replicas in sync", lambda: len(c.partition("drc")["isr"]) == 3)
    produce(c.bootstrap(), "drc", 400)
    leader = c.partition("drc")["leader"]
    follower = next(i for i in c.nodes if i != leader)
    # Asked of a follower: forwarded to the leader.
    r = c.cli("topic", "delete-records", "drc", "0", "--offset", "150", via=follower)
    assert r["low_watermark"] == 150
    for i in c.nodes:
        wait_until(f"broker {i}'s replica starts at 150",
                   lambda i=i: c.partition("drc", via=i)["log_start_offset"] == 150)
        # Every replica dropped the segments wholly below it, and kept the one holding it.
        bases = sorted(int(f.stem) for f in (c.nodes[i].data_dir / "drc-0").glob("*.log"))
        assert bases[0] <= 150 and (len(bases) == 1 or bases[1] > 150), (i, bases)
    # A follower that restarts keeps the start, and so does a new leader.
    c.nodes[leader].stop()
    wait_until("a new leader", lambda: c.partition("drc", via=follower)["leader"] not in (-1, leader))
    assert watermarks(c.bootstrap(exclude=(leader,)), "drc")[0] == 150
    assert first_from_earliest(c.bootstrap(exclude=(leader,)), "drc") == 150
    c.nodes[leader].start()
    wait_until("the old leader back in the ISR", lambda: len(c.partition("drc")["isr"]) == 3, timeout=60)
    assert c.partition("drc", via=leader)["log_start_offset"] == 150
    out = json.dumps(c.cli("topic", "describe", "drc", via=leader))
    assert '"log_start_offset": 150' in out
