"""Zero-copy fetch: on a PLAINTEXT listener the record bytes of a fetch go from the
segment file to the socket with sendfile (`strata_fetch_record_bytes{path="zero_copy"}`
counts them); on an SSL listener they are copied (`path="copy"`). Real consumers on
both listeners read the same bytes, also while the producer rolls segments and
retention deletes them under the readers."""
import hashlib
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_security import start_secure


def payload(i):
    """The value of the i-th record: 300–1,300 bytes, derived from i alone."""
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * 41)[: 300 + (i * 37) % 1000]


def fetch_bytes(b, path):
    total = 0.0
    for line in b.metrics().splitlines():
        if line.startswith("strata_fetch_record_bytes") and f'path="{path}"' in line:
            total += float(line.split()[-1])
    return total


def consumer(b, listener):
    conf = {"group.id": f"zc-{listener}-{time.time_ns()}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "max.partition.fetch.bytes": 65536}
    if listener == "SSL":
        conf.update({"bootstrap.servers": f"127.0.0.1:{b.ports['SSL']}",
                     "security.protocol": "SSL", "ssl.ca.location": str(b.pki.ca)})
    else:
        conf["bootstrap.servers"] = b.bootstrap
    return Consumer(conf)


def read(b, listener, topic, until, deadline_s=60):
    """(offset, key, value, timestamp) of every record below `until`, from offset 0."""
    c = consumer(b, listener)
    c.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + deadline_s
    while (not got or got[-1][0] < until - 1) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append((m.offset(), m.key(), m.value(), m.timestamp()))
    c.close()
    return got


def produce(b, topic, start, n):
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True,
                  "linger.ms": 2, "batch.size": 16384})
    for i in range(start, start + n):
        p.produce(topic, key=str(i).encode(), value=payload(i), partition=0)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def test_plaintext_fetches_use_sendfile_and_match_the_copying_tls_path(tmp_path):
    b = start_secure(tmp_path, STRATA_RETENTION_CHECK_INTERVAL_MS="100")
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("zc", 1, 1, config={"segment.bytes": "65536"})])["zc"].result(30)
        produce(b, "zc", 0, 3000)
        zc0, copy0 = fetch_bytes(b, "zero_copy"), fetch_bytes(b, "copy")
        plain = read(b, "PLAINTEXT", "zc", 3000)
        zc1, copy1 = fetch_bytes(b, "zero_copy"), fetch_bytes(b, "copy")
        value_bytes = sum(len(v) for _, _, v, _ in plain)
        # Every record byte the consumer got came through sendfile (plus batch and
        # record framing), none through the copying path.
        assert [o for o, *_ in plain] == list(range(3000))
        assert zc1 - zc0 >= value_bytes, (zc1 - zc0, value_bytes)
        assert copy1 == copy0
        tls = read(b, "SSL", "zc", 3000)
        assert fetch_bytes(b, "copy") - copy1 >= value_bytes
        assert fetch_bytes(b, "zero_copy") == zc1
        assert tls == plain
        assert all(v == payload(o) and k == str(o).encode() for o, k, v, _ in plain)
        assert len(list((b.data_dir / "zc-0").glob("*.log"))) > 10, "no segment rolls"
    finally:
        b.kill()


def test_readers_see_the_same_bytes_while_segments_roll_and_retention_deletes(tmp_path):
    b = start_secure(tmp_path, STRATA_RETENTION_CHECK_INTERVAL_MS="100")
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        cfg = {"segment.bytes": "32768", "retention.bytes": "131072"}
        admin.create_topics([NewTopic("zr", 1, 1, config=cfg)])["zr"].result(30)
        total, step = 12000, 500
        produced = []

        def producer():
            for s in range(0, total, step):
                produce(b, "zr", s, step)
                produced.append(s + step)

        t = threading.Thread(target=producer)
        t.start()
        seen = {}
        readers = []

        def reader(listener):
            c = consumer(b, listener)
            c.assign([TopicPartition("zr", 0, 0)])
            got, resets, deadline = [], 0, time.time() + 120
            while (not got or got[-1] < total - 1) and time.time() < deadline:
                m = c.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    resets += m.error().code() == KafkaError._AUTO_OFFSET_RESET
                    continue
                # Byte for byte what was produced at this offset.
                assert m.value() == payload(m.offset()), (listener, m.offset())
                assert m.key() == str(m.offset()).encode()
                got.append(m.offset())
            c.close()
            seen[listener] = got

        for listener in ("PLAINTEXT", "SSL"):
            readers.append(threading.Thread(target=reader, args=(listener,)))
            readers[-1].start()
        t.join(180)
        for r in readers:
            r.join(180)
        assert produced and produced[-1] == total
        for listener in ("PLAINTEXT", "SSL"):
            got = seen.get(listener)
            assert got, f"{listener} reader failed"
            assert got[-1] == total - 1, (listener, got[-1])
            # Offsets only move forward; a gap is only ever retention's (a reset).
            assert all(b2 > a for a, b2 in zip(got, got[1:])), listener
        low, _ = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "w"}).get_watermark_offsets(
            TopicPartition("zr", 0), timeout=10)
        assert low > 0, "retention never deleted a segment"
        assert fetch_bytes(b, "zero_copy") > 0 and fetch_bytes(b, "copy") > 0
    finally:
        b.kill()
