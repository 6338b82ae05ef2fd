"""A consumer-group member of the fault suite, run as its own process so the nemesis
can SIGSTOP it past its session timeout. It records into its own history file every
record it reads (with the value and which of its assignments it read it in), every
commit (invoke, then ok or fail) and every assignment.

It commits the positions it consumed after each batch. When resumed with SIGCONT it
first commits, at once, the positions it had before it was stopped: that is the stale
commit of a zombie member, which the coordinator must refuse once the group has moved
on without it (checked by the committed-offsets reads in the checker)."""
import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from history import History  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--group", required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--history", required=True)
ap.add_argument("--session-ms", type=int, default=6000)
ap.add_argument("--max-seconds", type=int, default=3600)
args = ap.parse_args()

from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402

h = History(args.history)
flags = {"stop": False, "woke": False}
signal.signal(signal.SIGTERM, lambda *_: flags.update(stop=True))
signal.signal(signal.SIGCONT, lambda *_: flags.update(woke=True))

c = Consumer({
    "bootstrap.servers": args.bootstrap,
    "group.id": args.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": args.session_ms,
    "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": "range",
    "topic.metadata.refresh.interval.ms": 2000,
})
# positions: what this member consumed in its current assignment (what it commits);
# held: the same, but kept across a revoke, since librdkafka may notice the expired
# session and revoke before Python sees SIGCONT: the stale commit sends these.
state = {"assignment": 0, "positions": {}, "held": {}}


def on_assign(consumer, parts):
    state["assignment"] += 1
    state["positions"] = {}
    state["held"] = {}
    h.record(args.name, "info", "assign", assignment=state["assignment"], partitions=sorted(p.partition for p in parts))


def on_revoke(consumer, parts):
    h.record(args.name, "info", "revoke", assignment=state["assignment"], partitions=sorted(p.partition for p in parts))
    state["positions"] = {}


def commit(positions, stale=False):
    if not positions:
        return
    offsets = {str(p): o for p, o in positions.items()}
    h.record(args.name, "invoke", "commit", group=args.group, topic=args.topic, offsets=offsets, stale=stale,
             assignment=state["assignment"])
    try:
        c.commit(offsets=[TopicPartition(args.topic, p, o) for p, o in positions.items()], asynchronous=False)
        h.record(args.name, "ok", "commit", group=args.group, topic=args.topic, offsets=offsets, stale=stale,
                 assignment=state["assignment"])
    except KafkaException as e:
        h.record(args.name, "fail", "commit", group=args.group, topic=args.topic, offsets=offsets, stale=stale,
                 assignment=state["assignment"], error=str(e.args[0]))


c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
deadline = time.monotonic() + args.max_seconds
while not flags["stop"] and time.monotonic() < deadline:
    if flags["woke"]:
        flags["woke"] = False
        h.record(args.name, "info", "woke", positions={str(p): o for p, o in state["held"].items()})
        commit(dict(state["held"]), stale=True)
    # A short timeout: the SIGCONT handler runs only between calls, and the stale
    # commit must go out before the client has rejoined under a new generation.
    msgs = c.consume(num_messages=200, timeout=0.1)
    batch = {}
    for m in msgs:
        if m.error():
            continue
        h.record(args.name, "ok", "read", topic=m.topic(), partition=m.partition(), offset=m.offset(),
                 value=m.value().decode(), assignment=state["assignment"])
        batch[m.partition()] = m.offset() + 1
    if batch:
        state["positions"].update(batch)
        state["held"].update(batch)
        commit(batch)
c.close()
h.close()
