"""Consume-transform-produce exactly once: copies every record of the input topic to
the same partition of the output topic, in transactions that also commit the
consumer's offsets. Run as its own process so a test can kill -9 it; a restarted
copier fences its predecessor (same transactional.id) and resumes from the offsets
its last committed transaction stored. Exits 0 once the group's committed offsets
cover `total` input records.

    python txn_copier.py BOOTSTRAP INPUT OUTPUT GROUP TXN_ID TOTAL
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def main():
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
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 30000,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    })
    producer.init_transactions(120)
    consumer.subscribe([src])
    deadline = time.time() + 600
    while time.time() < deadline:
        msgs = [m for m in consumer.consume(num_messages=50, timeout=1.0) if not m.error()]
        if not msgs:
            assignment = consumer.assignment()
            if assignment:
                committed = consumer.committed(assignment, timeout=10)
                done = sum(max(tp.offset, 0) for tp in committed)
                if done >= total:
                    print(f"copier done: {done} committed", flush=True)
                    return 0
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(dst, value=m.value(), partition=m.partition())
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 60)
            producer.commit_transaction(60)
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                print(f"copier fatal: {err}", flush=True)
                return 2
            print(f"copier aborting: {err}", flush=True)
            try:
                producer.abort_transaction(60)
            except KafkaException as e2:
                print(f"copier abort failed: {e2}", flush=True)
                return 3
            # Rewind to what the last committed transaction stored.
            committed = consumer.committed(consumer.assignment(), timeout=30)
            for tp in committed:
                consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
    print("copier timed out", flush=True)
    return 4


if __name__ == "__main__":
    sys.exit(main())
