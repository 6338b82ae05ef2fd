"""Replication throttles on three brokers: `leader.replication.throttled.rate` and
`follower.replication.throttled.rate` set with Kafka's kafka-configs hold a replica
being added by a reassignment to the rate until it is in sync, as
kafka-reassign-partitions --throttle expects; what moved is counted in the brokers'
metrics. Each bound below is a lower bound on the time a move takes (a slow, busy
machine only makes the move slower), so the test cannot fail because of load."""
import time

from confluent_kafka import Producer

from test_cluster import Cluster, wait_until
from test_kafka_tools import tool
from test_quotas import metric

CONFIGS = "kafka.admin.ConfigCommand"
REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
RATE = 2_000_000  # bytes per second
RECORD = 256 * 1024
RECORDS = 96  # 24 MiB: about 12 s at RATE


def fill(bootstrap, topic):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "message.max.bytes": 2 * RECORD})
    for i in range(RECORDS):
        p.produce(topic, value=bytes([i % 256]) * RECORD, partition=0)
        p.poll(0)
    assert p.flush(60) == 0


def throttled_bytes(node, side):
    return metric(node, "strata_replication_throttled_bytes_total", {"side": side})


def test_throttled_reassignments_move_at_the_configured_rate(tmp_path):
    c = Cluster(tmp_path, 3)
    for n in c.nodes.values():
        # Smaller follower fetches than the default 8 MiB, so one round's overshoot
        # past the budget is small beside the whole move.
        n.env["STRATA_REPLICA_FETCH_MAX_BYTES"] = str(1 << 20)
    try:
        c.start()
        bs = c.bootstrap()
        configs = lambda *a: tool(CONFIGS, "--bootstrap-server", bs, *a, tmp=tmp_path)  # noqa: E731
        c.cli("topic", "create", "slow", "--partitions", "1", "--replication-factor", "1")
        [src] = c.partition("slow")["replicas"]
        first, second = [i for i in c.nodes if i != src]
        fill(bs, "slow")
        size = RECORDS * RECORD

        # 1. Cluster-wide rates (the operator's reassignmentThrottle sets these) hold
        #    back the replica a reassignment adds, with no replica lists.
        configs("--alter", "--entity-type", "brokers", "--entity-default", "--add-config",
                f"leader.replication.throttled.rate={RATE},follower.replication.throttled.rate={RATE}")
        described = configs("--describe", "--entity-type", "brokers", "--entity-default")
        assert f"follower.replication.throttled.rate={RATE}" in described, described
        before = throttled_bytes(c.nodes[first], "follower")
        start = time.monotonic()
        r = c.cli("topic", "reassign", "slow", "0", "--replicas", f"{src},{first}")
        wait_until("the throttled replica is in sync",
                   lambda: c.cli("topic", "reassignment-status", r["id"])["completed_moves"] == 1,
                   timeout=180, interval=0.5)
        took = time.monotonic() - start
        print(f"cluster-wide rates: {size} bytes in {took:.1f}s")
        # One second of budget up front and one fetch (1 MiB) of overshoot: the rest
        # of the bytes cannot have moved faster than the rate.
        floor = (size - RATE - (1 << 20)) / RATE
        assert took >= 0.8 * floor, f"{size} bytes moved in {took:.1f}s, faster than {RATE} B/s"
        moved = throttled_bytes(c.nodes[first], "follower") - before
        assert moved >= 0.9 * size, f"only {moved} of {size} bytes were counted as throttled"
        assert throttled_bytes(c.nodes[src], "leader") >= 0.9 * size
        assert metric(c.nodes[first], "strata_replication_throttle_holds_total", {"side": "follower"}) > 0
        # In-sync replicas are never held back: a produce with acks=all is acknowledged
        # by both replicas at once while the rates stay set.
        p = Producer({"bootstrap.servers": bs, "acks": "all", "message.max.bytes": 2 * RECORD})
        t0 = time.monotonic()
        p.produce("slow", value=b"x" * RECORD, partition=0)
        assert p.flush(30) == 0
        assert time.monotonic() - t0 < 10
        configs("--alter", "--entity-type", "brokers", "--entity-default", "--delete-config",
                "leader.replication.throttled.rate,follower.replication.throttled.rate")

        # 2. kafka-reassign-partitions --throttle: per-broker rates and the topic's
        #    throttled-replica lists, cleared by --verify once the move is done.
        plan = tmp_path / "plan.json"
        plan.write_text('{"version":1,"partitions":[{"topic":"slow","partition":0,'
                        f'"replicas":[{src},{first},{second}]}}]}}')
        reassign = lambda *a: tool(REASSIGN, "--bootstrap-server", bs, *a, tmp=tmp_path)  # noqa: E731
        start = time.monotonic()
        out = reassign("--execute", "--reassignment-json-file", str(plan), "--throttle", str(RATE))
        assert f"The inter-broker throttle limit was set to {RATE} B/s" in out, out
        topic = configs("--describe", "--entity-type", "topics", "--entity-name", "slow")
        assert f"follower.replication.throttled.replicas=0:{second}" in topic, topic

        def verified():
            v = reassign("--verify", "--reassignment-json-file", str(plan))
            return v if "Reassignment of partition slow-0 is completed." in v else None

        done = wait_until("the kafka-reassign-partitions move completed", verified, timeout=180, interval=1)
        took = time.monotonic() - start
        print(f"kafka-reassign-partitions --throttle: {size} bytes in {took:.1f}s")
        assert took >= 0.8 * floor, f"{size} bytes moved in {took:.1f}s, faster than {RATE} B/s"
        assert "Clearing topic-level throttles on topic slow" in done, done
        topic = configs("--describe", "--entity-type", "topics", "--entity-name", "slow")
        assert "throttled.replicas" not in topic, topic
        broker = configs("--describe", "--entity-type", "brokers", "--entity-name", str(second))
        assert "throttled.rate" not in broker, broker
        assert sorted(c.partition("slow")["isr"]) == sorted([src, first, second])
    finally:
        c.stop_all()
