"""The consume-transform-produce copier of the fault suite, run as its own process so
the nemesis can kill -9 it: it copies every record of the input topic, read with
read_committed, to the same partition of the output topic, in transactions that also
commit its group's offsets (send_offsets_to_transaction), until SIGTERM.

Each copy transaction goes into its own history file: `copy` invoke {values,
offsets: the positions it commits}, then ok (committed), fail (aborted: the commit
was never asked for, or failed and was aborted) or info (outcome unknown). After any
failure it rewinds to the offsets its group has committed (what the last committed
transaction stored), with a new producer if the old one cannot go on, so it copies
exactly once. A restarted copier fences its predecessor (same transactional.id),
whose open transaction the coordinator aborts."""
import argparse
import faulthandler
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from history import History  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--src", required=True)
ap.add_argument("--dst", required=True)
ap.add_argument("--group", required=True)
ap.add_argument("--txn-id", required=True)
ap.add_argument("--name", required=True)
ap.add_argument("--history", required=True)
ap.add_argument("--max-seconds", type=int, default=3600)
args = ap.parse_args()

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402

h = History(args.history)
flags = {"stop": False}
signal.signal(signal.SIGTERM, lambda *_: flags.update(stop=True))
# SIGUSR1: every thread's stack to stderr (the test asks for it when the copier
# makes no progress).
faulthandler.register(signal.SIGUSR1, all_threads=True)


def new_producer():
    """A transactional producer, initialised (retried while the coordinator moves)."""
    while not flags["stop"]:
        p = Producer({
            "bootstrap.servers": args.bootstrap,
            "transactional.id": args.txn_id,
            "transaction.timeout.ms": 20000,
            "message.timeout.ms": 20000,
            "linger.ms": 5,
        })
        try:
            p.init_transactions(30)
            h.record(args.name, "info", "copier-init", txn_id=args.txn_id)
            return p
        except KafkaException as e:
            h.record(args.name, "info", "copier-init-failed", error=str(e.args[0]))
            time.sleep(1)
    return None


c = Consumer({
    "bootstrap.servers": args.bootstrap,
    "group.id": args.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "topic.metadata.refresh.interval.ms": 2000,
})
producer = new_producer()
c.subscribe([args.src])
n = 0


def rewind():
    """Back to the offsets the last committed transaction stored."""
    while not flags["stop"]:
        try:
            assignment = c.assignment()
            for tp in c.committed(assignment, timeout=30):
                c.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
            h.record(args.name, "info", "copier-rewind",
                     offsets={str(tp.partition): tp.offset for tp in c.position(assignment)})
            return
        except KafkaException as e:
            h.record(args.name, "info", "copier-rewind-failed", error=str(e.args[0]))
            time.sleep(1)


deadline = time.monotonic() + args.max_seconds
while producer is not None and not flags["stop"] and time.monotonic() < deadline:
    msgs = [m for m in c.consume(num_messages=100, timeout=0.5) if not m.error()]
    if not msgs:
        continue
    n += 1
    values = [m.value().decode() for m in msgs]
    committing = False
    try:
        producer.begin_transaction()
        for m in msgs:
            producer.produce(args.dst, value=m.value(), partition=m.partition())
        positions = c.position(c.assignment())
        offsets = {str(tp.partition): tp.offset for tp in positions}
        h.record(args.name, "invoke", "copy", txn=f"{args.name}:{n}", values=values, offsets=offsets)
        producer.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
        committing = True
        for attempt in range(3):
            try:
                producer.commit_transaction(30)
                break
            except KafkaException as e:
                if not e.args[0].retriable() or attempt == 2:
                    raise
        h.record(args.name, "ok", "copy", txn=f"{args.name}:{n}")
        continue
    except KafkaException as e:
        err = e.args[0]
        h.record(args.name, "info" if committing else "fail", "copy", txn=f"{args.name}:{n}", error=str(err),
                 fatal=err.fatal())
    except BufferError as e:
        err = None
        h.record(args.name, "fail", "copy", txn=f"{args.name}:{n}", error=str(e), fatal=False)
    # The transaction failed: abort it (or replace a producer that cannot), rewind.
    try:
        if err is not None and err.fatal():
            raise KafkaException(err)
        producer.abort_transaction(30)
    except KafkaException as e:
        h.record(args.name, "info", "copier-abort-failed", error=str(e.args[0]))
        producer = new_producer()
    rewind()
c.close()
h.record(args.name, "info", "copier-stopped", transactions=n)
h.close()
