"""The broker's own configs through Kafka's kafka-configs tool: every setting under its
Kafka name with its source and synonyms (a setting of this broker, Kafka's default
beside it), no dynamic ones, and an alteration refused naming the setting to change."""
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
    # Nothing is dynamic: no dynamic configs of this broker, no cluster-wide defaults.
    out = run("--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert out.strip() == "Dynamic configs for broker 1 are:", out
    out = run("--describe", "--entity-type", "brokers", "--entity-default")
    assert out.strip() == "Default configs for brokers in the cluster are:", out

    refused = run("--alter", "--entity-type", "brokers", "--entity-name", "1", "--add-config",
                  "log.retention.ms=5,no.such.config=1", check=False)
    assert refused.returncode != 0
    err = refused.stdout + refused.stderr
    assert ("cannot update these broker configs dynamically: log.retention.ms is read at startup "
            "(Strata setting `log_retention_ms`, environment STRATA_LOG_RETENTION_MS); "
            "no.such.config is not a broker config Strata has") in err, err
