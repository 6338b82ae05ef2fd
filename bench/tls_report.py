"""Turns the phase files of bench/tls.sh into the table of its RESULTS.md section: per
side and protocol, produce and consume MB/s and broker CPU-seconds per GiB, with the
SASL_SSL / PLAINTEXT ratio of each side and the Strata / Kafka ratio of each row."""
import os
import sys

import phases

work, records, *sides = sys.argv[1:]
records = int(records)
hz = os.sysconf("SC_CLK_TCK")


def values(side, name):
    p = phases.phase(work, hz, side, name)
    if not p:
        return {}
    v = (phases.produce if name.startswith("produce") else phases.consume)(p, records)
    v["load"] = p["load"]
    return v


print(f"{records} records of 1 KiB; one broker each, PLAINTEXT and SASL_SSL (SCRAM-SHA-512, TLS 1.3) "
      f"listeners on the same broker; ratios: SASL_SSL / PLAINTEXT within a side, Strata / Kafka "
      f"across.\n")
print("| phase | metric | Kafka PLAINTEXT | Kafka SASL_SSL | TLS cost | Strata PLAINTEXT | Strata SASL_SSL "
      "| TLS cost | Strata / Kafka, SASL_SSL |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for op in ("produce", "consume"):
    v = {(s, proto): values(s, f"{op}-{proto}") for s in ("kafka", "strata") for proto in ("plaintext", "sasl_ssl")}
    for label, key in (("CPU-s/GiB", "cpu_gib"), ("MB/s", "mbps"), ("load average (end)", "load")):
        k0, k1 = v["kafka", "plaintext"].get(key), v["kafka", "sasl_ssl"].get(key)
        s0, s1 = v["strata", "plaintext"].get(key), v["strata", "sasl_ssl"].get(key)
        tail = "" if key == "load" else phases.ratio(k1, s1)
        kc = "" if key == "load" else phases.ratio(k0, k1)
        sc = "" if key == "load" else phases.ratio(s0, s1)
        print(f"| {op} | {label} | {phases.fmt(k0)} | {phases.fmt(k1)} | {kc} | {phases.fmt(s0)} | "
              f"{phases.fmt(s1)} | {sc} | {tail} |")
paths = os.path.join(work, "strata-fetch-paths.txt")
if os.path.exists(paths):
    print("\nStrata's `strata_fetch_record_bytes` by path at the end (warm-ups included):\n")
    for line in open(paths).read().split("\n"):
        if line.strip():
            print(f"- `{line.strip()}`")
print("\nRaw output:\n")
for side in sides:
    for op in ("produce", "consume"):
        for proto in ("plaintext", "sasl_ssl"):
            p = phases.phase(work, hz, side, f"{op}-{proto}")
            if p:
                print(f"- {side} {op} {proto} ({p['cpu_s']:.1f} CPU-s in {p['wall_s']:.1f} s): `{p['out']}`")
print()
