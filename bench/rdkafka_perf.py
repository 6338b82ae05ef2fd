"""librdkafka (confluent-kafka) producer benchmark: N records of SIZE bytes to TOPIC,
acks as given; prints throughput and per-record produce latency percentiles (time from
produce() to the delivery report). `--rate` paces it to that many records a second
(latency at a fixed load rather than at saturation); `--keys N` gives the records
keys from a space of N (a compacted topic needs them)."""
import argparse
import json
import time

from confluent_kafka import Producer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--records", type=int, default=500_000)
ap.add_argument("--size", type=int, default=1024)
ap.add_argument("--acks", default="1")
ap.add_argument("--rate", type=float, default=0, help="records per second (0: as fast as possible)")
ap.add_argument("--keys", type=int, default=0, help="key space (0: no keys)")
args = ap.parse_args()

p = Producer({"bootstrap.servers": args.bootstrap, "acks": args.acks, "linger.ms": 5,
              "queue.buffering.max.messages": 200_000})
payload = b"x" * args.size
lat = []
errors = [0]


def cb(err, msg, start):
    if err is not None:
        errors[0] += 1
    else:
        lat.append(time.perf_counter() - start)


t0 = time.perf_counter()
for i in range(args.records):
    if args.rate > 0:
        due = t0 + i / args.rate
        while time.perf_counter() < due:
            p.poll(max(0.0, min(0.005, due - time.perf_counter())))
    start = time.perf_counter()
    key = b"key-%d" % (i % args.keys) if args.keys else None
    while True:
        try:
            p.produce(args.topic, key=key, value=payload, on_delivery=lambda e, m, s=start: cb(e, m, s))
            break
        except BufferError:
            p.poll(0.001)
    if i % 1000 == 0:
        p.poll(0)
p.flush(120)
elapsed = time.perf_counter() - t0
lat.sort()


def pct(q):
    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")


print(json.dumps({
    "records": args.records, "errors": errors[0], "seconds": round(elapsed, 3),
    "records_per_sec": round(args.records / elapsed), "mb_per_sec": round(args.records * args.size / elapsed / 1e6, 1),
    "p50_ms": round(pct(0.5), 2), "p99_ms": round(pct(0.99), 2), "p999_ms": round(pct(0.999), 2),
}))
