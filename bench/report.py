"""Turns the raw lines of bench/run.sh into a Markdown section for RESULTS.md."""
import json
import platform
import re
import subprocess
import sys
import time

records = int(sys.argv[1])


def parse(line):
    name, pp, cp, rdk, grp = line.split("|")
    m = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
                  r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", pp)
    prod = dict(zip(["rps", "mbps", "avg", "max", "p50", "p95", "p99", "p999"], map(float, m.groups()))) if m else {}
    cols = [c.strip() for c in cp.split(",")]
    # start, end, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    cons = {"mbps": float(cols[3]), "rps": float(cols[5])} if len(cols) > 5 else {}
    return name, prod, cons, json.loads(rdk), float(grp), pp, cp


k = parse(sys.argv[2])
s = parse(sys.argv[3])


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — single node, acks=1, 1 KiB records, 3 partitions\n")
print(f"Machine: {platform.node()}, {cpu}, 2 cores. Kafka 4.1.1 (KRaft, JVM -Xmx1g) vs strata-broker (release).")
print(f"Command: `bench/run.sh {records}`. Ratios are Strata / Kafka (throughput: higher is better; latency: lower is better).\n")
print("| metric | Kafka | Strata | ratio |")
print("| --- | --- | --- | --- |")
rows = [
    ("ProducerPerformance MB/s", k[1].get("mbps"), s[1].get("mbps")),
    ("ProducerPerformance records/s", k[1].get("rps"), s[1].get("rps")),
    ("ProducerPerformance p50 ms", k[1].get("p50"), s[1].get("p50")),
    ("ProducerPerformance p99 ms", k[1].get("p99"), s[1].get("p99")),
    ("ProducerPerformance p99.9 ms", k[1].get("p999"), s[1].get("p999")),
    ("ConsumerPerformance MB/s", k[2].get("mbps"), s[2].get("mbps")),
    ("librdkafka producer MB/s", k[3]["mb_per_sec"], s[3]["mb_per_sec"]),
    ("librdkafka producer p50 ms", k[3]["p50_ms"], s[3]["p50_ms"]),
    ("librdkafka producer p99 ms", k[3]["p99_ms"], s[3]["p99_ms"]),
    ("librdkafka producer p99.9 ms", k[3]["p999_ms"], s[3]["p999_ms"]),
    ("group of 3 consumers MB/s", k[4], s[4]),
]
for name, a, b in rows:
    print(f"| {name} | {a} | {b} | {ratio(b, a) if a and b else 'n/a'} |")
print("\nRaw output:\n")
for r in (k, s):
    print(f"- {r[0]} ProducerPerformance: `{r[5].strip()}`")
    print(f"- {r[0]} ConsumerPerformance: `{r[6].strip()}`")
    print(f"- {r[0]} librdkafka: `{json.dumps(r[3])}`")
print()
