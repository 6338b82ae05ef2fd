"""A Kafka Streams application with a state store (a count per key, exactly_once_v2,
java/StreamsCount.java) on Strata: Streams creates the store's changelog topic
compacted, the broker's log cleaner compacts it while the application runs, and
after the application is killed -9 and its state directory deleted, it restores the
counts from the changelog and goes on with correct results."""
import shutil
import signal
import subprocess
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from test_transactions import read_all
from test_txn_tools import java_cmd, new_topic

APP = "strata-count-app"
CHANGELOG = f"{APP}-counts-changelog"
KEYS = [f"k{i}" for i in range(20)]


def latest_counts(bootstrap, topic):
    """key -> its latest count in the read_committed output ("key=count" values)."""
    latest = {}
    for _, key, value in read_all(bootstrap, topic, "read_committed", timeout=5):
        latest[key.decode()] = int(value.decode().split("=")[1])
    return latest


def removed_from(metrics, topic):
    """Records the log cleaner removed from `topic`, from the broker's metrics."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("strata_cleaner_records_removed_total") and f'topic="{topic}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_kafka_streams_restores_its_counts_from_the_compacted_changelog(broker_factory, tmp_path):
    broker = broker_factory({"STRATA_LOG_CLEANER_BACKOFF_MS": "200"})
    bs = broker.bootstrap
    src, dst = new_topic(bs, partitions=2), new_topic(bs, partitions=2)
    p = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    state = tmp_path / "state"

    def feed(rounds):
        # One record per key and round, the rounds apart, so every commit of the
        # application (100 ms) writes a new version of each count to the changelog.
        for r in range(rounds):
            for k in KEYS:
                p.produce(src, key=k.encode(), value=str(r).encode())
            assert p.flush(30) == 0
            time.sleep(0.3)

    def start(n):
        log = open(tmp_path / f"streams-{n}.log", "w")
        return subprocess.Popen(java_cmd(tmp_path, "StreamsCount", bs, src, dst, APP, str(state)),
                                stdout=log, stderr=subprocess.STDOUT)

    def wait_running(n, timeout=120):
        # Fed only once it runs, so the records arrive over many commits.
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "-> RUNNING" in (tmp_path / f"streams-{n}.log").read_text():
                return
            time.sleep(0.2)
        raise AssertionError((tmp_path / f"streams-{n}.log").read_text()[-3000:])

    def wait_for(counts, n, timeout=120):
        deadline = time.time() + timeout
        got = {}
        while time.time() < deadline:
            got = latest_counts(bs, dst)
            if got == counts:
                return
            time.sleep(0.5)
        log = (tmp_path / f"streams-{n}.log").read_text()[-3000:]
        raise AssertionError(f"counts {got} instead of {counts}; log: {log}")

    app = start(0)
    try:
        wait_running(0)
        feed(10)
        wait_for({k: 10 for k in KEYS}, 0)
        # Streams made the changelog compacted; the cleaner has compacted it.
        res = ConfigResource(ConfigResource.Type.TOPIC, CHANGELOG)
        admin = AdminClient({"bootstrap.servers": bs})
        desc = admin.describe_configs([res])[res].result(30)
        assert desc["cleanup.policy"].value == "compact"
        deadline = time.time() + 60
        while removed_from(broker.metrics(), CHANGELOG) == 0 and time.time() < deadline:
            time.sleep(0.5)
        assert removed_from(broker.metrics(), CHANGELOG) > 0, "the changelog was never cleaned"
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=30)

    # The local store is gone: the restarted application rebuilds it from the
    # (compacted) changelog and counts on from there.
    shutil.rmtree(state)
    app = start(1)
    try:
        wait_running(1)
        feed(10)
        wait_for({k: 20 for k in KEYS}, 1)
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
