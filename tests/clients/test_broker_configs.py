"""The broker's own configs through Kafka's kafka-configs tool: every setting under its
Kafka name with its source and synonyms (a setting of this broker, Kafka's default
beside it); dynamic broker configs, per broker and cluster-wide, that apply at run
time and survive a restart; and an alteration of a startup setting refused naming the
setting to change."""
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import Cluster, wait_until
from test_kafka_tools import tool

CONFIGS = "kafka.admin.ConfigCommand"


def test_kafka_configs_describes_broker_settings_with_sources_and_synonyms(broker_factory, tmp_path):
    broker = broker_factory({"STRATA_LOG_RETENTION_MS": "3600000"})
    bs = broker.bootstrap
    run = lambda *a, **kw: tool(CONFIGS, "--bootstrap-server", bs, *a, tmp=tmp_path, **kw)  # noqa: E731

    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1", "--all")
    assert out.startswith("All configs for broker 1 are:"), out
    lines = {line.split("=", 1)[0].strip(): line.strip() for line in out.splitlines()[1:]}
    assert lines["log.retention.ms"] == (
        "log.retention.ms=3600000 sensitive=false synonyms={STATIC_BROKER_CONFIG:log.retention.ms=3600000, "
        "DEFAULT_CONFIG:log.retention.ms=604800000}"), out
    assert lines["node.id"] == "node.id=1 sensitive=false synonyms={DEFAULT_CONFIG:node.id=1}", out
    assert f"listeners=PLAINTEXT://{bs} " in lines["listeners"], out
    # Nothing set dynamically yet: no dynamic configs of this broker, no cluster-wide defaults.
    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert out.strip() == "Dynamic configs for broker 1 are:", out
    out = run("--describe", "--entity-type", "brokers", "--entity-default")
    assert out.strip() == "Default configs for brokers in the cluster are:", out

    refused = run("--alter", "--entity-type", "brokers", "--entity-name", "1", "--add-config",
                  "log.retention.ms=5,num.partitions=2,no.such.config=1", check=False)
    assert refused.returncode != 0
    err = refused.stdout + refused.stderr
    assert ("cannot update these broker configs dynamically: no.such.config is not a broker config "
            "Strata has; num.partitions is read at startup (Strata setting `default_partitions`, "
            "environment STRATA_DEFAULT_PARTITIONS)") in err, err
    # Refused whole: the dynamic key of the same request was not set either.
    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert out.strip() == "Dynamic configs for broker 1 are:", out


def earliest(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
    finally:
        c.close()


def test_dynamic_broker_configs_apply_at_run_time_and_survive_a_restart(broker_factory, tmp_path):
    """A cluster-wide log.retention.bytes set with kafka-configs --entity-default makes
    retention delete old segments of a topic that does not override it, without a
    restart; a per-broker value wins over the default; a bad value is refused; the
    values are kept in the metadata quorum across a restart and deleted again."""
    broker = broker_factory({"STRATA_RETENTION_CHECK_INTERVAL_MS": "200"})
    bs = broker.bootstrap
    run = lambda *a, **kw: tool(CONFIGS, "--bootstrap-server", bs, *a, tmp=tmp_path, **kw)  # noqa: E731
    # Kafka's tools refuse segments under 1 MiB before asking; the broker takes 2 KiB.
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("dyn", 1, 1, config={"segment.bytes": "2048"})])["dyn"].result(30)
    p = Producer({"bootstrap.servers": bs, "linger.ms": 0})
    for i in range(200):
        p.produce("dyn", b"x" * 200, key=str(i).encode())
        p.poll(0)
    assert p.flush(30) == 0
    del p, admin
    time.sleep(1)  # five retention checks: nothing is deleted under the static default
    assert earliest(bs, "dyn") == 0

    out = run("--alter", "--entity-type", "brokers", "--entity-default", "--add-config",
              "log.retention.bytes=4096")
    assert "Completed updating default config for brokers in the cluster." in out, out
    wait_until("retention applies the dynamic default", lambda: earliest(bs, "dyn") > 0)

    out = run("--describe", "--entity-type", "brokers", "--entity-default")
    assert "log.retention.bytes=4096 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:" \
           "log.retention.bytes=4096}" in out, out
    topic = run("--describe", "--entity-type", "topics", "--entity-name", "dyn", "--all")
    assert "retention.bytes=4096 " in topic, topic

    run("--alter", "--entity-type", "brokers", "--entity-name", "1", "--add-config",
        "log.retention.bytes=-1,log.cleaner.io.max.bytes.per.second=1.0E7")
    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1", "--all")
    lines = {line.split("=", 1)[0].strip(): line.strip() for line in out.splitlines()[1:]}
    assert lines["log.retention.bytes"] == (
        "log.retention.bytes=-1 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:log.retention.bytes=-1, "
        "DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.bytes=4096, DEFAULT_CONFIG:log.retention.bytes=-1}"), out
    assert lines["log.cleaner.io.max.bytes.per.second"].startswith(
        "log.cleaner.io.max.bytes.per.second=10000000 "), out
    topic = run("--describe", "--entity-type", "topics", "--entity-name", "dyn", "--all")
    assert "retention.bytes=-1 " in topic, topic

    bad = run("--alter", "--entity-type", "brokers", "--entity-name", "1", "--add-config",
              "log.retention.ms=-7", check=False)
    assert bad.returncode != 0
    assert "invalid value for log.retention.ms: -7 is outside -1..=" in bad.stdout + bad.stderr, bad

    broker.stop()
    broker.start()
    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert "log.retention.bytes=-1 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:log.retention.bytes=-1" \
        in out, out
    run("--alter", "--entity-type", "brokers", "--entity-name", "1", "--delete-config",
        "log.retention.bytes,log.cleaner.io.max.bytes.per.second")
    run("--alter", "--entity-type", "brokers", "--entity-default", "--delete-config", "log.retention.bytes")
    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert out.strip() == "Dynamic configs for broker 1 are:", out
    out = run("--describe", "--entity-type", "brokers", "--entity-default")
    assert out.strip() == "Default configs for brokers in the cluster are:", out


def test_a_cluster_default_reaches_every_broker(tmp_path):
    """A dynamic default set through one broker of three applies on all of them."""
    c = Cluster(tmp_path, 3)
    try:
        c.start()
        run = lambda *a, **kw: tool(CONFIGS, "--bootstrap-server", c.bootstrap(), *a, tmp=tmp_path, **kw)  # noqa: E731
        run("--alter", "--entity-type", "brokers", "--entity-default", "--add-config", "log.roll.ms=3600000")

        def everywhere():
            for i in c.nodes:
                out = run("--describe", "--entity-type", "brokers", "--entity-name", str(i), "--all")
                if "log.roll.ms=3600000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG" not in out:
                    return False
            return True
        wait_until("the default on every broker", everywhere)
    finally:
        c.stop_all()
