"""Apache Kafka's own command-line tools (4.1.1, the jars scripts/setup.sh fetches
from Maven Central) against a Strata broker, run as their kafka-*.sh wrappers would
run them: topics, configs, log dirs, offsets, consumer groups, cluster id, API
versions and delete records; against three brokers leader election and partition
reassignment. Each asserts on what the tool prints."""
import json
import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

CACHE = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata"))


def kafka_libs():
    pointer = CACHE / "current-kafka-libs"
    libs = Path(pointer.read_text().strip()) if pointer.exists() else None
    if not libs or not any(libs.glob("kafka-tools-*.jar")):
        pytest.fail("Kafka's jars are missing: run scripts/setup.sh")
    return libs


def tool(main_class, *args, check=True, tmp=None):
    """Runs one Kafka tool; returns its stdout, or with check=False the whole
    completed process."""
    log4j = tmp / "log4j2.properties"
    log4j.write_text("rootLogger.level = ERROR\n")
    cmd = ["java", "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}",
           "-cp", f"{kafka_libs()}/*", main_class, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not check:
        return out
    if out.returncode != 0:
        raise AssertionError(f"{main_class} {' '.join(args)} failed ({out.returncode}):\n"
                             f"{out.stdout}\n{out.stderr}")
    return out.stdout


def produce(bootstrap, topic, n):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(n):
        p.produce(topic, value=str(i).encode(), partition=i % 2)
    assert p.flush(30) == 0


def test_kafka_command_line_tools(broker, tmp_path):
    bs = broker.bootstrap
    run = lambda cls, *a, **kw: tool(cls, *a, tmp=tmp_path, **kw)  # noqa: E731

    # kafka-topics: create, list, describe.
    run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs, "--create",
        "--topic", "tools", "--partitions", "2", "--replication-factor", "1",
        "--config", "retention.ms=7200000")
    assert "tools" in run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs,
                          "--list").split()
    described = run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs,
                    "--describe", "--topic", "tools")
    assert "PartitionCount: 2" in described and "Leader: 1" in described, described
    # Through DescribeTopicPartitions (over Metadata the ELR columns read N/A), and paged
    # one partition per response by its cursor.
    assert "Elr: \tLastKnownElr: " in described, described
    paged = run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs, "--describe",
                "--topic", "tools", "--partition-size-limit-per-response", "1")
    assert [line.split("Partition: ")[1].split()[0] for line in paged.splitlines()
            if "Partition: " in line] == ["0", "1"], paged

    # kafka-configs: alter (IncrementalAlterConfigs) and describe.
    run("kafka.admin.ConfigCommand", "--bootstrap-server", bs, "--entity-type", "topics",
        "--entity-name", "tools", "--alter", "--add-config", "retention.ms=3600000,segment.ms=600000")
    configs = run("kafka.admin.ConfigCommand", "--bootstrap-server", bs, "--entity-type", "topics",
                  "--entity-name", "tools", "--describe")
    assert "retention.ms=3600000" in configs and "segment.ms=600000" in configs, configs
    run("kafka.admin.ConfigCommand", "--bootstrap-server", bs, "--entity-type", "topics",
        "--entity-name", "tools", "--alter", "--delete-config", "segment.ms")
    configs = run("kafka.admin.ConfigCommand", "--bootstrap-server", bs, "--entity-type", "topics",
                  "--entity-name", "tools", "--describe")
    assert "segment.ms=600000" not in configs, configs
    refused = tool("kafka.admin.ConfigCommand", "--bootstrap-server", bs, "--entity-type", "brokers",
                   "--entity-name", "1", "--alter", "--add-config", "num.partitions=2",
                   check=False, tmp=tmp_path)
    # A broker setting read at startup is refused with the broker's reason (the
    # dynamic ones are in test_broker_configs.py).
    assert refused.returncode != 0
    assert "num.partitions is read at startup" in refused.stdout + refused.stderr, refused.stderr

    produce(bs, "tools", 100)

    # kafka-get-offsets: the end offset of each partition.
    offsets = run("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", bs,
                  "--topic", "tools")
    ends = {line.split(":")[1]: int(line.split(":")[2]) for line in offsets.split() if line}
    assert ends == {"0": 50, "1": 50}, offsets

    # kafka-log-dirs: DescribeCluster for the broker list, then DescribeLogDirs.
    dirs = run("org.apache.kafka.tools.LogDirsCommand", "--bootstrap-server", bs, "--describe",
               "--topic-list", "tools")
    report = json.loads(dirs.strip().splitlines()[-1])
    [b] = report["brokers"]
    assert b["broker"] == 1
    [d] = b["logDirs"]
    sizes = {p["partition"]: p["size"] for p in d["partitions"]}
    assert set(sizes) == {"tools-0", "tools-1"} and all(s > 0 for s in sizes.values()), sizes

    # kafka-consumer-groups: a group that consumed and committed.
    c = Consumer({"bootstrap.servers": bs, "group.id": "tools-group", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("tools", 0, 0), TopicPartition("tools", 1, 0)])
    seen = 0
    while seen < 100:
        m = c.poll(5)
        assert m is not None, f"consumed {seen} of 100"
        if not m.error():
            seen += 1
    c.commit(asynchronous=False)
    c.close()
    groups = run("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "--bootstrap-server", bs,
                 "--describe", "--group", "tools-group")
    rows = [line.split() for line in groups.splitlines() if line.startswith("tools-group")]
    assert sorted((r[1], r[2], r[3], r[4], r[5]) for r in rows) == [
        ("tools", "0", "50", "50", "0"), ("tools", "1", "50", "50", "0")], groups

    # kafka-cluster: the cluster id (DescribeCluster).
    cluster_id = run("org.apache.kafka.tools.ClusterTool", "cluster-id", "--bootstrap-server", bs)
    assert cluster_id.startswith("Cluster ID: ") and len(cluster_id.split()[-1]) > 0, cluster_id

    # kafka-broker-api-versions: what ApiVersions advertises.
    versions = run("org.apache.kafka.tools.BrokerApiVersionsCommand", "--bootstrap-server", bs)
    for api in ("OffsetForLeaderEpoch", "IncrementalAlterConfigs", "DescribeLogDirs", "DescribeCluster",
                "DeleteRecords", "ElectLeaders", "AlterPartitionReassignments", "ListPartitionReassignments",
                "DescribeTopicPartitions"):
        assert api in versions and f"{api}(" in versions.replace(" ", ""), versions

    # kafka-topics: delete.
    run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs, "--delete", "--topic", "tools")
    assert "tools" not in run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs,
                              "--list").split()


def test_kafka_delete_records_tool(broker, tmp_path):
    """kafka-delete-records moves the log start; a consumer from earliest starts
    there, kafka-get-offsets reports it, and past the high watermark is an error."""
    bs = broker.bootstrap
    run = lambda cls, *a, **kw: tool(cls, *a, tmp=tmp_path, **kw)  # noqa: E731
    run("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs, "--create",
        "--topic", "trim", "--partitions", "2", "--replication-factor", "1")
    produce(bs, "trim", 200)
    spec = tmp_path / "offsets.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "trim", "partition": 0, "offset": 30},
        {"topic": "trim", "partition": 1, "offset": -1}]}))
    out = run("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", bs,
              "--offset-json-file", str(spec))
    lines = out.splitlines()
    assert lines[:2] == ["Executing records delete operation", "Records delete operation completed:"], out
    assert sorted(lines[2:]) == ["partition: trim-0\tlow_watermark: 30",
                                 "partition: trim-1\tlow_watermark: 100"], out

    earliest = run("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", bs,
                   "--topic", "trim", "--time", "-2")
    assert sorted(earliest.split()) == ["trim:0:30", "trim:1:100"], earliest

    c = Consumer({"bootstrap.servers": bs, "group.id": "trim-reader", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(["trim"])
    first = {}
    while 0 not in first:
        m = c.poll(10)
        assert m is not None, "nothing consumed from trim"
        if not m.error():
            first.setdefault(m.partition(), m.offset())
    c.close()
    assert first[0] == 30 and 1 not in first, first

    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "trim", "partition": 0, "offset": 101}]}))
    past = run("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", bs,
               "--offset-json-file", str(spec))
    assert "partition: trim-0\terror: org.apache.kafka.common.errors.OffsetOutOfRangeException" in past, past


def test_kafka_leader_election_tool_on_three_brokers(tmp_path):
    """kafka-leader-election --election-type PREFERRED: nothing to do while the
    preferred replica leads, refused while it is down, and moves leadership back
    once it is in sync again (the controller's own rebalancing is off here)."""
    from test_cluster import Cluster, wait_until

    c = Cluster(tmp_path, 3)
    for n in c.nodes.values():
        n.env["STRATA_AUTO_LEADER_REBALANCE_ENABLE"] = "false"
    try:
        c.start()
        c.cli("topic", "create", "elect", "--partitions", "1", "--replication-factor", "3")
        wait_until("all replicas in sync", lambda: len(c.partition("elect")["isr"]) == 3)
        preferred = c.partition("elect")["replicas"][0]
        assert c.partition("elect")["leader"] == preferred

        def elect(*args, check=True):
            return tool("org.apache.kafka.tools.LeaderElectionCommand", "--bootstrap-server",
                        c.bootstrap(), *args, check=check, tmp=tmp_path)

        one = ("--topic", "elect", "--partition", "0")
        out = elect("--election-type", "PREFERRED", *one)
        assert out.strip() == "Valid replica already elected for partitions elect-0", out
        out = elect("--election-type", "UNCLEAN", *one)
        assert out.strip() == "Valid replica already elected for partitions elect-0", out

        c.nodes[preferred].stop()
        other = next(i for i in c.nodes if i != preferred)
        wait_until("leadership moved off the stopped broker",
                   lambda: c.partition("elect", via=other)["leader"] not in (-1, preferred))
        refused = elect("--election-type", "PREFERRED", *one, check=False)
        assert refused.returncode != 0, refused.stdout
        assert ("Error completing leader election (PREFERRED) for partition: elect-0: "
                "org.apache.kafka.common.errors.PreferredLeaderNotAvailableException") in refused.stdout, \
            refused.stdout + refused.stderr

        c.nodes[preferred].start()
        wait_until("the preferred replica back in sync", lambda: len(c.partition("elect")["isr"]) == 3,
                   timeout=60)
        assert c.partition("elect")["leader"] != preferred, "moved back without being asked"
        out = elect("--election-type", "PREFERRED", *one)
        assert out.strip() == "Successfully completed leader election (PREFERRED) for partitions elect-0", out
        wait_until("the preferred replica leads", lambda: c.partition("elect")["leader"] == preferred)
    finally:
        c.stop_all()


def test_kafka_reassign_partitions_tool_on_three_brokers(tmp_path):
    """kafka-reassign-partitions --generate, --execute, --verify, --list and --cancel
    against three brokers. The reassignment to cancel is held in progress by a file
    where the new replica's directory would go, so that replica cannot be created
    (an honest stand-in for a replica that cannot catch up)."""
    from test_cluster import Cluster, wait_until

    c = Cluster(tmp_path, 3)
    try:
        c.start()
        c.cli("topic", "create", "moves", "--partitions", "1", "--replication-factor", "2")
        wait_until("both replicas in sync", lambda: len(c.partition("moves")["isr"]) == 2)
        r0, r1 = c.partition("moves")["replicas"]
        [spare] = [i for i in c.nodes if i not in (r0, r1)]

        def reassign(*args, check=True):
            return tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", "--bootstrap-server",
                        c.bootstrap(), *args, check=check, tmp=tmp_path)

        def plan(replicas):
            f = tmp_path / "plan.json"
            f.write_text(json.dumps({"version": 1, "partitions": [
                {"topic": "moves", "partition": 0, "replicas": replicas}]}))
            return str(f)

        topics = tmp_path / "topics.json"
        topics.write_text(json.dumps({"version": 1, "topics": [{"topic": "moves"}]}))
        generated = reassign("--generate", "--topics-to-move-json-file", str(topics), "--broker-list", "1,2,3")
        current = json.loads(generated.split("Current partition replica assignment")[1]
                             .split("Proposed partition reassignment configuration")[0])
        assert current["partitions"] == [{"topic": "moves", "partition": 0, "replicas": [r0, r1],
                                          "log_dirs": ["any", "any"]}], generated
        proposed = json.loads(generated.split("Proposed partition reassignment configuration")[1])
        assert len(proposed["partitions"][0]["replicas"]) == 2, generated

        # A reassignment that completes: [r0, r1] -> [r1, spare].
        out = reassign("--execute", "--reassignment-json-file", plan([r1, spare]))
        assert "Successfully started partition reassignment for moves-0" in out, out
        assert f'"replicas":[{r0},{r1}]' in out, out

        def verified():
            v = reassign("--verify", "--reassignment-json-file", plan([r1, spare]))
            return v if "Reassignment of partition moves-0 is completed." in v else None

        done = wait_until("the reassignment completed", verified, timeout=60, interval=1)
        assert "Clearing broker-level throttles on brokers 1,2,3" in done, done
        assert "Clearing topic-level throttles on topic moves" in done, done
        assert c.partition("moves")["replicas"] == [r1, spare]
        wait_until("r0's replica removed", lambda: not (c.nodes[r0].data_dir / "moves-0").exists())

        # A reassignment held in progress, then cancelled: [r1, spare] -> [spare, r0].
        blocker = c.nodes[r0].data_dir / "moves-0"
        blocker.write_text("not a partition directory\n")
        out = reassign("--execute", "--reassignment-json-file", plan([spare, r0]))
        assert "Successfully started partition reassignment for moves-0" in out, out
        again = reassign("--execute", "--reassignment-json-file", plan([spare, r0]), check=False)
        assert "Cannot execute because there is an existing partition assignment" in again.stdout, again.stdout
        v = reassign("--verify", "--reassignment-json-file", plan([spare, r0]))
        assert "Reassignment of partition moves-0 is still in progress." in v, v
        listed = reassign("--list")
        assert listed.strip() == (f"Current partition reassignments:\nmoves-0: replicas: {r1},{spare},{r0}. "
                                  f"adding: {r0}. removing: {r1}."), listed
        cancelled = reassign("--cancel", "--reassignment-json-file", plan([spare, r0]))
        assert "Successfully cancelled partition reassignment for: moves-0" in cancelled, cancelled
        p = c.partition("moves")
        assert p["replicas"] == [r1, spare] and sorted(p["isr"]) == sorted([r1, spare]), p
        assert reassign("--list").strip() == "No partition reassignments found."
        blocker.unlink()
    finally:
        c.stop_all()
