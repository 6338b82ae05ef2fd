"""Kafka's Java AdminClient (kafka-clients 4.1.1, tests/clients/java/AdminCheck.java)
against one broker — topics, configs, groups and offset resets, log dirs, offsets by
timestamp, delete records, client quotas — and against three brokers — a partition
reassignment and a preferred leader election."""
import subprocess

from test_cluster import cluster_factory  # noqa: F401 (fixture)
from test_txn_tools import java_cmd


def admin_check(tmp_path, mode, bootstrap):
    out = subprocess.run(java_cmd(tmp_path, "AdminCheck", mode, bootstrap), capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    return {line.split()[1]: line.split(" ", 2)[2] for line in out.stdout.splitlines()
            if line.startswith("OK ")}


def test_java_admin_client_on_one_broker(broker, tmp_path):
    checks = admin_check(tmp_path, "single", broker.bootstrap)
    assert checks["describeTopics"].endswith("partitions=3"), checks
    assert checks["describeConfigs"] == "retention.ms=7200000 segment.ms=600000", checks
    assert checks["listOffsets"] == "forTimestamp=4 latest=10", checks
    assert "state=Empty members=0" in checks["describeConsumerGroups"], checks
    assert checks["alterConsumerGroupOffsets"] == "offset=2", checks
    assert "size>0" in checks["describeLogDirs"], checks
    assert checks["deleteRecords"] == "lowWatermark=5", checks
    assert checks["clientQuotas"] == "set, described, removed", checks
    assert "deleteTopics" in checks, checks


def test_java_admin_client_reassigns_and_elects_on_three_brokers(cluster_factory, tmp_path):
    c = cluster_factory(3)
    checks = admin_check(tmp_path, "cluster", c.bootstrap())
    assert checks["alterPartitionReassignments"].endswith("replicas=[3, 2]"), checks
    assert " leader=3 " in checks["electLeaders"], checks
