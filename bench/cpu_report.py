"""Turns the phase files of bench/cpu.sh (bench/workloads.sh) into a Markdown section
for RESULTS.md: per phase, the three brokers' CPU-seconds per GiB of records, MB/s,
latency percentiles, RSS, next to Kafka's, with Strata / Kafka ratios."""
import json
import os
import platform
import subprocess
import sys
import time

import phases

work, records, rate, seconds, load_start, hz = sys.argv[1:7]
records, rate, seconds, hz = int(records), float(rate), int(seconds), int(hz)
GIB = phases.GIB


def phase(side, name):
    return phases.phase(work, hz, side, name)


def produce(p):
    return phases.produce(p, records)


def consume(p):
    return phases.consume(p, records)


def omb(p):
    try:
        v = json.loads(p["out"].splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    # Everything sent in the run (warm-up included) against all the brokers' CPU.
    sent = rate * (5 + seconds) * 1024
    return {"rate": v["achieved_rate"], "errors": v["errors"], "p50": v["publish"]["p50_ms"],
            "p99": v["publish"]["p99_ms"], "p999": v["publish"]["p999_ms"], "e2e50": v["e2e"]["p50_ms"],
            "e2e99": v["e2e"]["p99_ms"], "e2e999": v["e2e"]["p999_ms"], "cpu_gib": p["cpu_s"] / (sent / GIB),
            "core": 100 * p["cpu_s"] / p["wall_s"]}


ratio, fmt = phases.ratio, phases.fmt


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                     text=True).stdout.strip()
print(f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — CPU per byte, 3 brokers each (`bench/cpu.sh`)\n")
print(f"Machine: {platform.node()}, {cpu}, {os.cpu_count()} cores shared by brokers and clients (one side at a "
      f"time). Kafka 4.1.1 (3 combined KRaft nodes, -Xmx1g each) vs `strata-broker dev --brokers 3` (release). "
      f"Command: `{os.environ.get('BENCH_ENV', '')}bench/cpu.sh {records} {rate:.0f}` (OMB_SECONDS={seconds}). Load average at the start "
      f"{load_start}. CPU = utime+stime of the three broker processes over the phase; ratios are "
      f"Strata / Kafka.\n")
print("| phase | metric | Kafka | Strata | ratio |\n| --- | --- | --- | --- | --- |")
rows = []
for name, parse, metrics in [
    ("acks1", produce, [("CPU-s/GiB", "cpu_gib"), ("MB/s", "mbps"), ("p50 ms", "p50"), ("p99 ms", "p99"),
                        ("p99.9 ms", "p999")]),
    ("acksall", produce, [("CPU-s/GiB", "cpu_gib"), ("MB/s", "mbps"), ("p50 ms", "p50"), ("p99 ms", "p99"),
                          ("p99.9 ms", "p999")]),
    ("consume", consume, [("CPU-s/GiB", "cpu_gib"), ("MB/s", "mbps")]),
    ("omb", omb, [("CPU-s/GiB", "cpu_gib"), ("CPU % of a core", "core"), ("achieved records/s", "rate"),
                  ("publish p50 ms", "p50"), ("publish p99 ms", "p99"), ("publish p99.9 ms", "p999"),
                  ("end-to-end p50 ms", "e2e50"), ("end-to-end p99 ms", "e2e99"),
                  ("end-to-end p99.9 ms", "e2e999"), ("errors", "errors")]),
]:
    k, s = phase("kafka", name), phase("strata", name)
    kv, sv = (parse(k) if k else {}), (parse(s) if s else {})
    label = {"acks1": "produce acks=1 (RF=1)", "acksall": "produce acks=all (RF=3)", "consume": "consume",
             "omb": f"OMB-like {rate:.0f} rec/s"}[name]
    for m, key in metrics:
        print(f"| {label} | {m} | {fmt(kv.get(key))} | {fmt(sv.get(key))} | {ratio(kv.get(key), sv.get(key))} |")
    print(f"| {label} | RSS MiB (3 brokers, end) | {fmt(k and k['rss_mib'])} | {fmt(s and s['rss_mib'])} | "
          f"{ratio(k and k['rss_mib'], s and s['rss_mib'])} |")
    print(f"| {label} | load average (end) | {fmt(k and k['load'])} | {fmt(s and s['load'])} | |")
k, s = phase("kafka", "idle"), phase("strata", "idle")
kc = k and 100 * k["cpu_s"] / k["wall_s"]
sc = s and 100 * s["cpu_s"] / s["wall_s"]
print(f"| idle 10 s (4 topics, 118 partitions) | CPU % of a core | {fmt(kc)} | {fmt(sc)} | {ratio(kc, sc)} |")
print("\nRaw output:\n")
for side in ("kafka", "strata"):
    for name in ("acks1", "acksall", "consume", "omb"):
        p = phase(side, name)
        if p:
            print(f"- {side} {name} ({p['cpu_s']:.1f} CPU-s in {p['wall_s']:.1f} s): `{p['out']}`")
print()
