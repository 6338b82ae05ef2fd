"""A consumer-group member run as its own process by the group tests.

It subscribes to a topic, records every consumed (partition, offset) in NAME.log and
its current assignment in NAME.assign (rewritten atomically), commits after every
batch, and on SIGTERM closes cleanly (leaving the group, unless it is a static
member). The test kills it with SIGKILL to simulate a crash."""
import argparse
import json
import os
import signal
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--group", required=True)
ap.add_argument("--strategy", default="range")
ap.add_argument("--instance-id")
ap.add_argument("--session-ms", type=int, default=6000)
ap.add_argument("--out", required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--max-seconds", type=int, default=300)
args = ap.parse_args()

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
log = open(os.path.join(args.out, args.name + ".log"), "a", buffering=1)
assign_path = os.path.join(args.out, args.name + ".assign")
events = {"assigns": 0}


def write_assignment(parts):
    tmp = assign_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"partitions": sorted(parts), "assigns": events["assigns"], "pid": os.getpid()}, f)
    os.replace(tmp, assign_path)


deadline = time.time() + args.max_seconds
if args.client == "confluent":
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "partition.assignment.strategy": args.strategy,
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": 500,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    c = Consumer(conf)

    def on_assign(consumer, parts):
        events["assigns"] += 1
        if args.strategy == "cooperative-sticky":
            consumer.incremental_assign(parts)
        write_assignment([p.partition for p in consumer.assignment()])

    def on_revoke(consumer, parts):
        if args.strategy == "cooperative-sticky":
            consumer.incremental_unassign(parts)
        write_assignment([p.partition for p in consumer.assignment()])

    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    write_assignment([])
    while not stop and time.time() < deadline:
        msgs = c.consume(num_messages=500, timeout=0.5)
        got = False
        for m in msgs:
            if m.error():
                continue
            log.write(f"{m.partition()} {m.offset()}\n")
            got = True
        if got:
            try:
                c.commit(asynchronous=False)
            except Exception as e:  # a commit racing a rebalance is retried next batch
                print("commit failed:", e, file=sys.stderr)
        write_assignment([p.partition for p in c.assignment()])
    c.close()
else:
    from kafka import KafkaConsumer, ConsumerRebalanceListener

    kw = dict(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=args.session_ms,
        heartbeat_interval_ms=500,
    )
    if args.instance_id:
        kw["group_instance_id"] = args.instance_id
    c = KafkaConsumer(**kw)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            write_assignment([])

        def on_partitions_assigned(self, assigned):
            events["assigns"] += 1
            write_assignment([tp.partition for tp in assigned])

    c.subscribe([args.topic], listener=Listener())
    write_assignment([])
    while not stop and time.time() < deadline:
        batch = c.poll(timeout_ms=500, max_records=500)
        got = False
        for tp, msgs in batch.items():
            for m in msgs:
                log.write(f"{tp.partition} {m.offset}\n")
                got = True
        if got:
            try:
                c.commit()
            except Exception as e:
                print("commit failed:", e, file=sys.stderr)
        write_assignment([tp.partition for tp in c.assignment()])
    c.close()
log.close()
