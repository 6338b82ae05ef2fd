"""Kafka's Java AdminClient (kafka-clients 4.1.1, tests/clients/java/AdminCheck.java)
against one broker — topics, configs, groups and offset resets, log dirs, offsets by
timestamp, delete records, client quotas — and against three brokers — a partition
reassignment and a preferred leader election; and Kafka's Java consumer detecting log
truncation after an unclean leader change (KIP-320, tests/clients/java/TruncationCheck.java)."""
import subprocess

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import cluster_factory  # noqa: F401 (fixture)
from test_cluster import wait_until
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
    assert checks["describeBrokerConfigs"].startswith("log.retention.ms type=LONG source="), checks
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


def test_java_consumer_detects_truncation_after_an_unclean_leader_change(cluster_factory, tmp_path):
    """Broker 1 leads alone (2 stopped) and takes records 10-19, which a consumer reads;
    then 1 stops and 2, which never had them, is elected uncleanly. Validating its
    position against the new leader (OffsetForLeaderEpoch) the consumer learns that
    its epoch ended at 10 there and raises LogTruncationException, then resumes at 10
    with what the new leader wrote."""
    c = cluster_factory(3)

    def partition_where(via, cond):
        part = c.partition("trunc", via=via)
        if not cond(part):
            raise AssertionError(part)  # wait_until reports the last one
        return part

    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic("trunc", num_partitions=1, replica_assignment=[[1, 2]], config={
        "unclean.leader.election.enable": "true", "min.insync.replicas": "1"})])["trunc"].result(30)
    # The manual assignment is honoured (CreateTopics with assignments).
    wait_until("both replicas in sync",
               lambda: partition_where(None, lambda p: p["replicas"] == [1, 2] and len(p["isr"]) == 2))

    def produce(bootstrap, prefix, n):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(n):
            p.produce("trunc", value=f"{prefix}{i}".encode(), partition=0)
        assert p.flush(30) == 0

    produce(c.bootstrap(), "a", 10)
    c.nodes[2].stop()
    wait_until("the ISR down to broker 1", lambda: partition_where(1, lambda p: p["isr"] == [1]))
    produce(c.nodes[1].bootstrap, "b", 10)

    java = subprocess.Popen(java_cmd(tmp_path, "TruncationCheck", c.bootstrap(), "trunc"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        consumed = java.stdout.readline()
        assert consumed.startswith("CONSUMED 20 "), consumed + java.stderr.read()
        c.nodes[1].stop()
        c.nodes[2].start()
        wait_until("broker 2 elected uncleanly",
                   lambda: partition_where(2, lambda p: p["leader"] == 2), timeout=60)
        produce(c.nodes[2].bootstrap, "c", 5)
        java.stdin.write("go\n")
        java.stdin.flush()
        out, err = java.communicate(timeout=150)
    finally:
        java.kill()
    assert java.returncode == 0, f"{consumed}{out}\n{err}"
    assert "TRUNCATED trunc-0 at=20 divergent=10" in out, out
    assert "RESUMED c0,c1,c2,c3,c4" in out, out
