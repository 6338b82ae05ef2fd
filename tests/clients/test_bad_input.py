"""Hostile and broken input on the Kafka port: each case gets an error response or a
closed connection, the broker never crashes or hangs, and a well-behaved producer
running at the same time is unaffected."""
import os
import random
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition


def header(api_key, version, corr=1, client=b"bad-input-test"):
    return struct.pack(">hhih", api_key, version, corr, len(client)) + client


def frame(body):
    return struct.pack(">i", len(body)) + body


def exchange(bootstrap, payload, half_close=True, timeout=10):
    """Sends raw bytes; returns what the broker answered before closing (b'' if it
    just closed). Fails if the broker neither answers nor closes in time."""
    host, port = bootstrap.split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


@pytest.fixture
def background_producer(broker):
    """A normal client producing during the test; yields a checker."""
    stop = threading.Event()
    delivered, errors = [], []

    def run():
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        i = 0
        while not stop.is_set() and i < 500_000:
            try:
                p.produce("good", value=str(i).encode(), partition=0,
                          on_delivery=lambda e, m: errors.append(e) if e else delivered.append(m.offset()))
                i += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            time.sleep(0.0005)
        p.flush(30)

    def wait_for_more(count, timeout=60):
        """Blocks until at least `count` more records than now are acknowledged."""
        target = len(delivered) + count
        deadline = time.monotonic() + timeout
        while len(delivered) < target and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        return len(delivered) >= target

    def finish():
        stop.set()
        t.join(60)
        return delivered, errors

    t = threading.Thread(target=run)
    t.start()
    yield wait_for_more, finish
    stop.set()
    t.join(60)


def test_bad_frames_are_rejected_without_affecting_others(broker, background_producer):
    bs = broker.bootstrap
    wait_for_more, finish = background_producer
    # The good producer is really running before the hostile input starts.
    assert wait_for_more(50), "background producer never got going"
    cases = {
        "negative length": struct.pack(">i", -5) + b"abc",
        "huge length": struct.pack(">i", 2**31 - 1) + b"abc",
        "truncated header": frame(b"\x00\x03\x00"),
        "unknown api key": frame(header(999, 0)),
        "unsupported produce version": frame(header(0, 99)),
        "unsupported fetch version": frame(header(1, 0)),
        "api not served": frame(header(57, 0)),
        # Metadata v1 claiming 2^31-1 topics in a 4-byte body: must not abort the broker.
        "array count bomb": frame(header(3, 1) + struct.pack(">i", 2**31 - 1)),
        # Metadata v9 (flexible): compact array length as a huge varint.
        "compact array bomb": frame(header(3, 9)[:-len(b"bad-input-test") - 2] + b"\x00\x0ebad-input-test\x00"
                                    + b"\xff\xff\xff\xff\x0f"),
        "truncated body": frame(header(0, 7) + b"\x00\x01"),
        "announced but missing body": struct.pack(">i", 100) + header(18, 0),
    }
    for name, payload in cases.items():
        reply = exchange(bs, payload)
        assert reply == b"", f"{name}: unexpected reply {reply[:40]!r}"
        assert broker.alive(), f"broker died on {name}"

    # Random garbage, many times, each on its own connection.
    rnd = random.Random(1234)
    for _ in range(200):
        junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
        if rnd.random() < 0.5:
            junk = frame(junk)
        exchange(bs, junk)
        assert broker.alive()

    # ApiVersions with an unknown version is answered (v0, error 35), not closed.
    reply = exchange(bs, frame(header(18, 99, corr=77)))
    size, corr, err = struct.unpack(">iih", reply[:10])
    assert size == len(reply) - 4 and corr == 77 and err == 35

    # ...and keeps being served afterwards.
    assert wait_for_more(50), "background producer stalled after the bad input"
    delivered, errors = finish()
    assert not errors, errors[:3]
    assert delivered == list(range(len(delivered)))
    assert broker.alive()
    metrics = broker.metrics()
    line = [l for l in metrics.splitlines() if l.startswith("strata_protocol_errors")][0]
    assert float(line.split()[-1]) >= len(cases)


def test_stalled_partial_frame_does_not_block_other_clients(broker):
    host, port = broker.bootstrap.split(":")
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(struct.pack(">i", 1000) + b"\x00\x12")  # promises 1000 bytes, sends 2
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("other", value=b"still works", partition=0)
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    c.assign([TopicPartition("other", 0, 0)])
    m = None
    deadline = time.time() + 15
    while m is None and time.time() < deadline:
        m = c.poll(0.5)
    assert m is not None and m.value() == b"still works"
    c.close()
    stalled.close()
