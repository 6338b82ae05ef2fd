"""Client quotas: Kafka's kafka-configs tool adds, describes and removes them (and they
survive a restart, being in the metadata quorum); a producer over its
producer_byte_rate and a consumer over its consumer_byte_rate are held near their
quotas and see the throttle, while an unthrottled client beside them is not slowed."""
import json
import re
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_kafka_tools import tool

CONFIGS = "kafka.admin.ConfigCommand"


def configs(bs, tmp, *args, check=True):
    return tool(CONFIGS, "--bootstrap-server", bs, *args, check=check, tmp=tmp)


def create_topic(bs, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def metric(broker, name, labels):
    """The value of one series of the broker's /metrics (0 when absent)."""
    for line in broker.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_kafka_configs_adds_describes_and_removes_client_quotas(broker_factory, tmp_path):
    broker = broker_factory()
    bs = broker.bootstrap
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "reports",
            "--add-config", "producer_byte_rate=1048576,consumer_byte_rate=2097152")
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-default",
            "--add-config", "request_percentage=12.5")
    configs(bs, tmp_path, "--alter", "--entity-type", "users", "--entity-name", "alice",
            "--entity-type", "clients", "--entity-name", "etl", "--add-config",
            "producer_byte_rate=4096")
    configs(bs, tmp_path, "--alter", "--entity-type", "users", "--entity-name", "bob",
            "--add-config", "consumer_byte_rate=8192")

    out = configs(bs, tmp_path, "--describe", "--entity-type", "clients", "--entity-name", "reports")
    assert "Quota configs for client-id 'reports' are " in out, out
    assert "consumer_byte_rate=2097152.0" in out and "producer_byte_rate=1048576.0" in out, out
    # Every client id (named ones only: the default is listed with --entity-default).
    out = configs(bs, tmp_path, "--describe", "--entity-type", "clients")
    assert "client-id 'reports'" in out and "request_percentage" not in out, out
    out = configs(bs, tmp_path, "--describe", "--entity-type", "clients", "--entity-default")
    assert "Quota configs for the default client-id are request_percentage=12.5" in out, out
    out = configs(bs, tmp_path, "--describe", "--entity-type", "users", "--entity-name", "alice",
                  "--entity-type", "clients", "--entity-name", "etl")
    assert "Quota configs for user-principal 'alice', client-id 'etl' are producer_byte_rate=4096.0" \
        in out, out
    # Users: the quotas (and no SCRAM credentials, which Strata does not have yet).
    out = configs(bs, tmp_path, "--describe", "--entity-type", "users", "--entity-name", "bob")
    assert "Quota configs for user-principal 'bob' are consumer_byte_rate=8192.0" in out, out

    # Refused with the broker's reason: an unknown key, an entity type not served.
    bad = configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "x",
                  "--add-config", "producer_byte_rate=1.5", check=False)
    assert bad.returncode != 0 and "whole number" in bad.stdout + bad.stderr, bad
    bad = configs(bs, tmp_path, "--alter", "--entity-type", "ips", "--entity-name", "127.0.0.1",
                  "--add-config", "connection_creation_rate=10", check=False)
    assert bad.returncode != 0 and "ip quotas" in bad.stdout + bad.stderr, bad

    # Kept in the metadata quorum: a restarted broker still has them.
    broker.stop()
    broker.start()
    out = configs(bs, tmp_path, "--describe", "--entity-type", "clients", "--entity-name", "reports")
    assert "producer_byte_rate=1048576.0" in out, out

    # Removed key by key; an entity without quotas is gone.
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "reports",
            "--delete-config", "producer_byte_rate")
    out = configs(bs, tmp_path, "--describe", "--entity-type", "clients", "--entity-name", "reports")
    assert "consumer_byte_rate=2097152.0" in out and "producer_byte_rate" not in out, out
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "reports",
            "--delete-config", "consumer_byte_rate")
    out = configs(bs, tmp_path, "--describe", "--entity-type", "clients")
    assert "reports" not in out, out


class Load:
    """A producer thread sending 1 KiB records as fast as it may, recording when each
    one was acknowledged and the largest throttle librdkafka reported."""

    def __init__(self, bs, topic, client_id, seconds):
        self.delivered = []
        self.throttle_max = 0
        self.errors = []
        self.conf = {"bootstrap.servers": bs, "client.id": client_id, "acks": 1,
                     "linger.ms": 5, "batch.size": 16384, "queue.buffering.max.kbytes": 2048,
                     "statistics.interval.ms": 500, "stats_cb": self.on_stats}
        self.topic, self.seconds = topic, seconds
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on_stats(self, raw):
        for b in json.loads(raw)["brokers"].values():
            self.throttle_max = max(self.throttle_max, b.get("throttle", {}).get("max", 0))

    def on_delivery(self, err, msg):
        if err is None:
            self.delivered.append((time.monotonic(), len(msg.value())))
        else:
            self.errors.append(err)

    def run(self):
        p = Producer(self.conf)
        value = b"x" * 1024
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            try:
                p.produce(self.topic, value, on_delivery=self.on_delivery)
            except BufferError:
                p.poll(0.05)
                continue
            p.poll(0)
        p.flush(60)
        p.poll(1)  # a last statistics callback

    def rate(self, seconds):
        """Bytes per second acknowledged over `seconds` from the first acknowledgement."""
        return held_rate(self.delivered, seconds)


def held_rate(events, seconds):
    """Bytes per second of `events` (time, bytes) over `seconds` from the first one.

    Measured from the start on purpose: Kafka's quotas (11 one-second samples, the rate
    taken over at least 10 s) let a client that has been quiet send about 10 s worth
    of its quota at once, and again each time that burst's sample expires (every ~11
    s), throttling it in between. So a 20 s window from the start holds exactly two
    such cycles, while one placed at random may hold one burst or two."""
    first = events[0][0]
    return sum(n for t, n in events if t < first + seconds) / seconds


def served_bytes(broker, metric_name, topic, seconds, poll=None):
    """(time, bytes) each time the broker's per-topic byte counter grew, sampled every
    0.25 s for `seconds` (calling `poll` between samples, e.g. a consumer's)."""
    events, last = [], 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if poll:
            poll()
        else:
            time.sleep(0.25)
        total = metric(broker, metric_name, {"topic": topic})
        if total > last:
            events.append((time.monotonic(), total - last))
            last = total
    return events


def test_a_producer_over_its_quota_is_held_near_it_and_another_is_not_slowed(broker, tmp_path):
    bs = broker.bootstrap
    quota = 256 * 1024
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "slow",
            "--add-config", f"producer_byte_rate={quota}")
    create_topic(bs, "quota-slow")
    create_topic(bs, "quota-fast")
    slow = Load(bs, "quota-slow", "slow", 36)
    fast = Load(bs, "quota-fast", "fast", 36)
    slow.thread.start()
    fast.thread.start()
    # Measured on the broker, as the quota is: the record bytes it appended for the
    # topic (a client-side clock would add the producer threads' scheduling delays).
    appended = served_bytes(broker, "strata_topic_bytes_in_total", "quota-slow", 34)
    slow.thread.join(120)
    fast.thread.join(120)
    assert not slow.errors and not fast.errors, (slow.errors[:3], fast.errors[:3])
    # Over 20 s: near the quota (which counts whole requests, a little more than the
    # record bytes).
    held = held_rate(appended, 20)
    assert 0.8 * quota <= held <= 1.2 * quota, f"{held:.0f} B/s against a quota of {quota}"
    assert slow.throttle_max > 0, "the throttled producer saw no throttle time"
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "produce"}) > 0
    # The client without a quota ran at its own pace at the same time.
    free = fast.rate(20)
    assert free > 4 * quota, f"the unthrottled producer ran at {free:.0f} B/s"
    assert fast.throttle_max == 0


def test_a_consumer_over_its_quota_is_held_near_it(broker, tmp_path):
    bs = broker.bootstrap
    create_topic(bs, "quota-fetch")
    # Small batches: a fetch returns a partition's first batch whole however large,
    # so ~1 MB batches would be served ~4 s of quota at a time and the quota could only
    # be met that coarsely (Kafka too; see docs/quotas.md).
    p = Producer({"bootstrap.servers": bs, "linger.ms": 20, "batch.size": 16384})
    for _ in range(12 * 1024):  # 12 MiB
        while True:
            try:
                p.produce("quota-fetch", b"y" * 1024)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0
    quota = 256 * 1024
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "slow-reader",
            "--add-config", f"consumer_byte_rate={quota}")
    throttle = []

    def stats(raw):
        for b in json.loads(raw)["brokers"].values():
            throttle.append(b.get("throttle", {}).get("max", 0))

    c = Consumer({"bootstrap.servers": bs, "group.id": "quota-reader", "client.id": "slow-reader",
                  "max.partition.fetch.bytes": 32768,
                  "statistics.interval.ms": 500, "stats_cb": stats})
    c.assign([TopicPartition("quota-fetch", 0, 0)])
    # Measured on the broker, as the quota is: the bytes it served for the topic (which
    # count the partial batch a size-limited fetch ends with, fetched again next time).
    errors = []

    def consume():
        m = c.poll(0.25)
        if m is not None and m.error():
            errors.append(m.error())

    served = served_bytes(broker, "strata_topic_bytes_out_total", "quota-fetch", 34, consume)
    c.close()
    assert not errors, errors[:3]
    held = held_rate(served, 20)
    assert 0.8 * quota <= held <= 1.2 * quota, f"{held:.0f} B/s against a quota of {quota}"
    assert max(throttle) > 0
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "fetch"}) > 0
    assert re.search(r"strata_quota_throttle_time_seconds_count\{[^}]*quota=\"fetch\"",
                     broker.metrics())


def test_request_percentage_throttles_on_handler_time(broker, tmp_path):
    """request_percentage=0.05 leaves a client 0.5 ms of handler time per second: a producer
    sending small batches as fast as it can is throttled for it (the waiting of a
    long-polling fetch would not count, only the handler's work)."""
    bs = broker.bootstrap
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "busy",
            "--add-config", "request_percentage=0.05")
    create_topic(bs, "quota-busy")
    busy = Load(bs, "quota-busy", "busy", 12)
    busy.conf.update({"linger.ms": 0, "batch.size": 2048, "queue.buffering.max.kbytes": 64})
    busy.thread.start()
    busy.thread.join(120)
    assert not busy.errors, busy.errors[:3]
    assert busy.throttle_max > 0, "the producer saw no throttle time"
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "request"}) > 0
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "produce"}) == 0


def test_request_percentage_throttle_is_carried_by_metadata_responses_too(broker, tmp_path):
    """Kafka puts the request-quota throttle in every response that has the field, not
    only Produce and Fetch: an admin client asking for metadata in a loop over its
    request_percentage sees throttle time reported by librdkafka from Metadata
    responses alone."""
    bs = broker.bootstrap
    configs(bs, tmp_path, "--alter", "--entity-type", "clients", "--entity-name", "busy-admin",
            "--add-config", "request_percentage=0.01")
    create_topic(bs, "quota-meta", partitions=50)
    throttle = []

    def stats(raw):
        for b in json.loads(raw)["brokers"].values():
            throttle.append(b.get("throttle", {}).get("max", 0))

    admin = AdminClient({"bootstrap.servers": bs, "client.id": "busy-admin",
                         "statistics.interval.ms": 200, "stats_cb": stats})
    deadline = time.monotonic() + 60
    while not any(throttle) and time.monotonic() < deadline:
        admin.list_topics(timeout=30)
        admin.poll(0.05)  # serves the statistics callback
    assert any(throttle), "no Metadata response carried a throttle"
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "request"}) > 0
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "produce"}) == 0
    assert metric(broker, "strata_quota_throttled_responses_total", {"quota": "fetch"}) == 0
