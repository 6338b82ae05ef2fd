"""Consume-transform-produce exactly once: copies every record of the input topic to
the same partition of the output topic, in transactions that also commit the
consumer's offsets. Run as its own process so a test can kill -9 it; a restarted
copier fences its predecessor (same transactional.id) and resumes from the offsets
its last committed transaction stored. Exits 0 once the group's committed offsets
cover `total` input records.

    python txn_copier.py BOOTSTRAP INPUT OUTPUT GROUP TXN_ID TOTAL
"""
import faulthandler
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def say(what):
    print(f"{time.strftime('%H:%M:%S')} copier: {what}", flush=True)


def retried(call, attempts=5):
    """A transactional call, repeated while librdkafka says it may be (a timed-out
    commit must be called again, not aborted)."""
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException as e:
            err = e.args[0]
            if not err.retriable() or err.txn_requires_abort() or attempt == attempts - 1:
                raise
            say(f"retrying: {err}")


def main():
    # SIGUSR1: every thread's stack (the test asks for it when the copier stalls).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    bootstrap, src, dst, group, txn_id, total = sys.argv[1:7]
    total = int(total)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
    })
    def new_producer():
        # A fresh instance fences its predecessor; the coordinator aborts what that left open.
        p = Producer({
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 30000,
            "linger.ms": 5,
            "message.timeout.ms": 30000,
            **({"debug": os.environ["STRATA_COPIER_DEBUG"]} if os.environ.get("STRATA_COPIER_DEBUG") else {}),
        })
        p.init_transactions(120)
        return p

    def committed():
        # The group coordinator may be moving: retried, bounded by the copier's deadline.
        while True:
            try:
                return consumer.committed(consumer.assignment(), timeout=10)
            except KafkaException as e:
                say(f"cannot read committed offsets yet: {e.args[0]}")
                time.sleep(0.5)

    producer = new_producer()
    consumer.subscribe([src])
    deadline = time.time() + 600
    while time.time() < deadline:
        msgs = [m for m in consumer.consume(num_messages=50, timeout=1.0) if not m.error()]
        if not msgs:
            if consumer.assignment():
                done = sum(max(tp.offset, 0) for tp in committed())
                if done >= total:
                    say(f"done: {done} committed")
                    return 0
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(dst, value=m.value(), partition=m.partition())
            positions = consumer.position(consumer.assignment())
            retried(lambda: producer.send_offsets_to_transaction(
                positions, consumer.consumer_group_metadata(), 30))
            retried(lambda: producer.commit_transaction(30))
            say(f"committed {len(msgs)} records up to {[(tp.partition, tp.offset) for tp in positions]}")
            continue
        except KafkaException as e:
            err = e.args[0]
            say(f"transaction failed: {err}")
        try:
            if err.fatal():
                raise KafkaException(err)
            producer.abort_transaction(60)
        except KafkaException as e:
            say(f"replacing the producer: {e.args[0]}")
            producer = new_producer()
        # Rewind to what the last committed transaction stored.
        for tp in committed():
            consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
    say("timed out")
    return 4


if __name__ == "__main__":
    sys.exit(main())
