"""Transactions with Kafka's own Java client (kafka-clients 4.1.1: commit, abort,
read_committed vs read_uncommitted, ProducerFencedException for a zombie) and
Kafka's `kafka-transactions` tool (list, describe, describe-producers, abort)."""
import hashlib
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from test_kafka_tools import CACHE, kafka_libs, tool
from test_transactions import read_all, txn_producer

JAVA_SRC = Path(__file__).parent / "java" / "TxnClient.java"


def java_client():
    """Compiles TxnClient.java once per source version (cached outside the clone)."""
    digest = hashlib.sha256(JAVA_SRC.read_bytes()).hexdigest()[:12]
    out = CACHE / f"java-txn-client-{digest}"
    if not (out / "TxnClient.class").exists():
        tmp = out.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-d", str(tmp), "-cp", f"{kafka_libs()}/*", str(JAVA_SRC)],
                       check=True, timeout=300)
        tmp.rename(out)
    return out


def run_java(tmp_path, *args):
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text("rootLogger.level = ERROR\n")
    cmd = ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}",
           "-cp", f"{java_client()}:{kafka_libs()}/*", "TxnClient", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
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
