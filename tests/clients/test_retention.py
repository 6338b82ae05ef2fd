"""Retention by size: with small segments and retention.bytes, old segments go and
ListOffsets(earliest) moves forward; reading from the old start is out of range."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def test_size_retention_advances_log_start(broker_factory):
    broker = broker_factory({"STRATA_RETENTION_CHECK_INTERVAL_MS": "200"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    cfg = {"segment.bytes": "16384", "retention.bytes": "65536"}
    admin.create_topics([NewTopic("ret", num_partitions=1, replication_factor=1, config=cfg)])["ret"].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(2000):
        p.produce("ret", value=b"x" * 200, partition=0)
        if i % 100 == 0:
            p.flush(10)
    assert p.flush(30) == 0

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "r", "enable.auto.commit": False})
    seg_dir = broker.data_dir / "ret-0"
    bound = 65536 + 16384 + 1024  # retention.bytes plus the active segment

    def on_disk():
        return sum(f.stat().st_size for f in seg_dir.glob("*.log"))

    low, high = 0, 0
    deadline = time.time() + 20
    while time.time() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition("ret", 0), timeout=5)
        if low > 0 and on_disk() <= bound:
            break
        time.sleep(0.2)
    assert high == 2000
    assert low > 0, "retention never deleted a segment"
    assert on_disk() <= bound, on_disk()
    # Reading from offset 0 now resets to the new earliest offset.
    c.assign([TopicPartition("ret", 0, 0)])
    c2 = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "r2", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    c2.assign([TopicPartition("ret", 0, 0)])
    first = None
    deadline = time.time() + 20
    while first is None and time.time() < deadline:
        m = c2.poll(0.5)
        if m is not None and m.error() is None:
            first = m.offset()
    assert first == low
    assert "strata_log_segments_deleted" in broker.metrics()
    c.close()
    c2.close()
