"""The phase files the benchmark scripts write ($WORK/<side>-<phase>.txt: a first line
with the broker processes' CPU ticks, wall seconds, RSS in KiB and the load average,
then the client's output), read back: Kafka's ProducerPerformance and
ConsumerPerformance summaries, CPU-seconds per GiB of records, and the Markdown
number and ratio formats of RESULTS.md. Shared by cpu_report.py and tls_report.py."""
import os
import re

GIB = 1 << 30
PP = re.compile(r"([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
                r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def phase(work, hz, side, name):
    path = os.path.join(work, f"{side}-{name}.txt")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        head, *rest = f.read().splitlines()
    ticks, wall, rss, load = head.split()
    return {"cpu_s": int(ticks) / hz, "wall_s": float(wall), "rss_mib": int(rss) / 1024, "load": float(load),
            "out": "\n".join(rest).strip()}


def produce(p, records):
    """ProducerPerformance's last line, and CPU-s/GiB of `records` 1 KiB records."""
    m = PP.search(p["out"])
    if not m:
        return {}
    v = dict(zip(["rps", "mbps", "avg", "max", "p50", "p95", "p99", "p999"], map(float, m.groups())))
    v["cpu_gib"] = p["cpu_s"] / (records * 1024 / GIB)
    return v


def consume(p, records):
    """ConsumerPerformance's line (--hide-header), and CPU-s/GiB."""
    cols = [c.strip() for c in p["out"].split(",")]
    v = {"mbps": float(cols[3])} if len(cols) > 5 else {}
    v["cpu_gib"] = p["cpu_s"] / (records * 1024 / GIB)
    return v


def ratio(a, b):
    return f"{b / a:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "n/a"


def fmt(x):
    return f"{x:.2f}" if isinstance(x, float) else ("—" if x is None else str(x))
