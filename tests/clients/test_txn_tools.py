"""Transactions with Kafka's own Java client (kafka-clients 4.1.1: commit, abort,
read_committed vs read_uncommitted, ProducerFencedException for a zombie), a Kafka
Streams application with exactly_once_v2 killed -9 mid-stream, and Kafka's
`kafka-transactions` tool (list, describe, describe-producers, abort)."""
import hashlib
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from test_kafka_tools import CACHE, kafka_libs, tool
from test_transactions import read_all, txn_producer

JAVA_DIR = Path(__file__).parent / "java"


def java_classes():
    """Compiles the Java programs once per source version (cached outside the clone)."""
    sources = sorted(JAVA_DIR.glob("*.java"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    out = CACHE / f"java-test-clients-{digest}"
    if not out.exists():
        tmp = Path(f"{out}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-d", str(tmp), "-cp", f"{kafka_libs()}/*", *map(str, sources)],
                       check=True, timeout=300)
        tmp.rename(out)
    return out


def java_cmd(tmp_path, main, *args):
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text("rootLogger.level = ERROR\n")
    return ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{java_classes()}:{kafka_libs()}/*", main, *args]


def run_java(tmp_path, *args):
    out = subprocess.run(java_cmd(tmp_path, "TxnClient", *args), capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    return out.stdout


def new_topic(bootstrap, partitions=1):
    name = f"jtx-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in fs.values():
        f.result(timeout=30)
    return name


def test_java_client_commits_aborts_and_reads_committed(broker, tmp_path):
    topic = new_topic(broker.bootstrap)
    out = run_java(tmp_path, "commit-abort", broker.bootstrap, topic)
    assert "COUNT read_committed 15" in out, out
    assert "ABORTED_SEEN read_committed 0" in out, out
    assert "COUNT read_uncommitted 25" in out, out


def test_java_zombie_producer_is_fenced(broker, tmp_path):
    topic = new_topic(broker.bootstrap)
    out = run_java(tmp_path, "fence", broker.bootstrap, topic)
    assert "FENCED" in out and "NOT_FENCED" not in out, out
    assert "VALUES fresh" in out, out


def test_kafka_streams_exactly_once_survives_a_kill_9(broker, tmp_path):
    bs = broker.bootstrap
    src, dst = new_topic(bs, partitions=2), new_topic(bs, partitions=2)
    total = 4000
    p = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True, "linger.ms": 5})

    def feed(lo, hi):
        for i in range(lo, hi):
            p.produce(src, key=b"k%d" % i, value=b"v%d" % i)
        assert p.flush(60) == 0

    def start(n):
        log = open(tmp_path / f"streams-{n}.log", "w")
        return subprocess.Popen(
            java_cmd(tmp_path, "StreamsCopy", bs, src, dst, "strata-eos-app", str(tmp_path / f"state-{n}")),
            stdout=log, stderr=subprocess.STDOUT)

    def copied():
        return len(read_all(bs, dst, "read_committed", timeout=5))

    feed(0, total // 2)
    app = start(0)
    try:
        deadline = time.time() + 120
        while copied() < 500 and time.time() < deadline:
            time.sleep(0.5)
        assert copied() >= 500, (tmp_path / "streams-0.log").read_text()[-3000:]
        # Killed -9 while records keep arriving, so a transaction is open: it stays
        # behind until the coordinator aborts it at its timeout.
        def trickle():
            for i in range(total // 2, 3 * total // 4):
                p.produce(src, key=b"k%d" % i, value=b"v%d" % i)
                if i % 50 == 0:
                    p.flush(30)
                    time.sleep(0.05)
            p.flush(60)
        feeder = threading.Thread(target=trickle)
        feeder.start()
        time.sleep(1.0)
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=10)
        feeder.join(timeout=120)
    finally:
        if app.poll() is None:
            app.kill()
    feed(3 * total // 4, total)
    app = start(1)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and copied() < total:
            time.sleep(1)
        out = read_all(bs, dst, "read_committed", expect_at_least=total, timeout=30)
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
    values = [v for _, _, v in out]
    assert len(values) == len(set(values)), f"{len(values) - len(set(values))} duplicates"
    assert sorted(values) == sorted(b"V%d" % i for i in range(total)), (
        f"{len(values)} of {total}; log: " + (tmp_path / "streams-1.log").read_text()[-3000:])


def test_kafka_transactions_tool_lists_describes_and_aborts(broker, tmp_path):
    bs = broker.bootstrap
    run = lambda *a, **kw: tool("org.apache.kafka.tools.TransactionsCommand",  # noqa: E731
                                "--bootstrap-server", bs, *a, tmp=tmp_path, **kw)
    topic = new_topic(bs)
    txn_id = f"tool-{uuid.uuid4().hex[:8]}"
    p = txn_producer(bs, txn_id)
    p.begin_transaction()
    p.produce(topic, value=b"left-open", partition=0)
    p.flush(30)
    plain = Producer({"bootstrap.servers": bs})
    plain.produce(topic, value=b"behind", partition=0)
    plain.flush(30)

    listed = run("list")
    assert txn_id in listed and "Ongoing" in listed, listed
    described = run("describe", "--transactional-id", txn_id)
    assert "Ongoing" in described and f"{topic}-0" in described, described
    producers = run("describe-producers", "--topic", topic, "--partition", "0")
    # The open transaction's first offset is 0.
    rows = [line.split() for line in producers.splitlines()[1:] if line.strip()]
    assert any(r[-1] == "0" for r in rows), producers

    # An open transaction holds read_committed consumers back...
    assert read_all(bs, topic, "read_committed", timeout=6) == []
    # ...until an operator aborts it.
    run("abort", "--topic", topic, "--partition", "0", "--start-offset", "0")
    deadline = time.time() + 20
    seen = []
    while time.time() < deadline and not seen:
        seen = read_all(bs, topic, "read_committed", timeout=6)
    assert [v for _, _, v in seen] == [b"behind"], seen
