"""Kafka Connect 4.1.1 (connect-runtime and the file connectors from Maven Central,
fetched by scripts/setup.sh) in distributed mode against a Strata broker: the worker
creates its three compacted topics (and refuses to start unless they are
`cleanup.policy=compact`), a FileStreamSource connector copies a file into a topic
and a FileStreamSink connector writes it back out; after the worker is killed -9
and restarted, it resumes from its stored offsets and nothing is lost."""
import json
import subprocess
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from conftest import free_port
from test_kafka_tools import kafka_libs


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError, KafkaException) as e:  # the worker may still be starting
            last = e
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Worker:
    def __init__(self, tmp, bootstrap):
        self.port = free_port()
        self.tmp = tmp
        self.props = tmp / "worker.properties"
        self.props.write_text("\n".join([
            f"bootstrap.servers={bootstrap}",
            "group.id=strata-connect",
            "config.storage.topic=connect-configs",
            "offset.storage.topic=connect-offsets",
            "status.storage.topic=connect-status",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.storage.partitions=1",
            "status.storage.partitions=1",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.storage.StringConverter",
            "offset.flush.interval.ms=500",
            f"listeners=http://127.0.0.1:{self.port}",
            "",
        ]))
        self.log4j = tmp / "log4j2.properties"
        self.log4j.write_text("rootLogger.level = INFO\nrootLogger.appenderRef.f.ref = F\n"
                              "appender.f.type = File\nappender.f.name = F\n"
                              f"appender.f.fileName = {tmp}/connect.log\n"
                              "appender.f.layout.type = PatternLayout\n"
                              "appender.f.layout.pattern = %d %p %c: %m%n\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["java", "-Xmx512m", f"-Dlog4j2.configurationFile={self.log4j}",
             "-cp", f"{kafka_libs()}/*", "org.apache.kafka.connect.cli.ConnectDistributed", str(self.props)],
            stdout=open(self.tmp / "connect.out", "ab"), stderr=subprocess.STDOUT)
        wait_for("the Connect REST API", lambda: self.get("/connectors") is not None and self.alive(), 120)

    def alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"the worker exited ({self.proc.returncode}); see {self.tmp}/connect.log")
        return True

    def kill(self):
        self.proc.kill()
        self.proc.wait(30)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def put_connector(self, name, config):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/connectors/{name}/config",
                                     data=json.dumps(config).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def running(self, name):
        try:
            s = self.get(f"/connectors/{name}/status")
        except urllib.error.HTTPError:
            return False
        return s["connector"]["state"] == "RUNNING" and s["tasks"] and all(
            t["state"] == "RUNNING" for t in s["tasks"])


def stored_position(bootstrap):
    """The file position the source connector last stored in connect-offsets."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets-reader", "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition("connect-offsets", 0), timeout=10)
        position = None
        if high == low:
            return None
        c.assign([TopicPartition("connect-offsets", 0, low)])
        deadline = time.time() + 20
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            if b"file-source" in (m.key() or b"") and m.value():
                position = json.loads(m.value()).get("position")
            if m.offset() >= high - 1:
                break
        return position
    finally:
        c.close()


def policy(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    try:
        return admin.describe_configs([res])[res].result(30)["cleanup.policy"].value
    except KafkaException:
        return None  # not created yet


def sink_committed(admin):
    req = ConsumerGroupTopicPartitions("connect-file-sink", [TopicPartition("connect-data", 0)])
    [fut] = admin.list_consumer_group_offsets([req]).values()
    return fut.result(30).topic_partitions[0].offset


def test_connect_distributed_copies_a_file_through_strata_and_survives_kill_9(broker, tmp_path):
    source, sink = tmp_path / "in.txt", tmp_path / "out.txt"
    lines = [f"line {i}" for i in range(200)]
    source.write_text("\n".join(lines[:100]) + "\n")
    worker = Worker(tmp_path, broker.bootstrap)
    worker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for t in ("connect-configs", "connect-offsets", "connect-status"):
            wait_for(f"{t} created compacted", lambda: policy(admin, t) == "compact", 60)
        worker.put_connector("file-source", {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1", "file": str(source), "topic": "connect-data"})
        worker.put_connector("file-sink", {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "1", "file": str(sink), "topics": "connect-data"})

        def copied(n):
            def check():
                worker.alive()
                return sink.exists() and set(lines[:n]) <= set(sink.read_text().splitlines())
            return check

        wait_for("the first 100 lines copied", copied(100), 120)
        # Kill -9 once both connectors have stored their progress: the source its file
        # position in connect-offsets, the sink its consumer group's offset.
        size = source.stat().st_size
        wait_for("the source's offset stored", lambda: stored_position(broker.bootstrap) == size, 60)
        wait_for("the sink's offset committed", lambda: sink_committed(admin) == 100, 60)
        worker.kill()
        with source.open("a") as f:
            f.write("\n".join(lines[100:]) + "\n")
        worker.start()
        wait_for("the connectors running again", lambda: worker.running("file-source") and worker.running("file-sink"), 120)
        wait_for("all 200 lines copied", copied(200), 120)
        out = sink.read_text().splitlines()
        # Both resumed from their stored offsets: every line exactly once, in order.
        assert out == lines
    finally:
        if worker.proc and worker.proc.poll() is None:
            worker.kill()
