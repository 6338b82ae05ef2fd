#!/usr/bin/env bash
# Log cleaner benchmark (strata-broker release, dev mode, one broker): fills a
# compacted topic with MiB of 1 KiB records over 10,000 keys while the cleaner is off,
# measures a probe producer's latency at a fixed rate (acks=all, another topic) with
# the cleaner idle, restarts the broker with the cleaner on and measures the same
# probe while the cleaner works through the whole dirty log. Reports the cleaner's
# throughput (dirty MB read per second of cleaning, from its "cleaned log" lines) and
# the probe's p50/p99/p99.9 idle vs cleaning.
# Usage: bench/cleaner.sh [MiB] [probe records/s]  — prints a Markdown block for RESULTS.md.
# CLEANER_THROTTLE=bytes/s sets log_cleaner_io_max_bytes_per_second for the cleaning phase.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MIB="${1:-4096}"
RATE="${2:-2000}"
WORK="$(mktemp -d /tmp/strata-bench-cleaner.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
BS=127.0.0.1:39092

start_strata() { # cleaner-enabled log-name
  STRATA_KAFKA_LISTEN=$BS STRATA_METRICS_LISTEN=127.0.0.1:39644 STRATA_ADMIN_LISTEN=127.0.0.1:39093 \
    STRATA_LOG_CLEANER_ENABLE=$1 STRATA_LOG_CLEANER_BACKOFF_MS=500 \
    STRATA_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND="${CLEANER_THROTTLE:-0}" \
    "$STRATA" dev --data-dir "$WORK/strata" > "$WORK/$2.log" 2>&1 &
  SPID=$!
  wait_port 127.0.0.1 39092
}

probe() { # seconds → the probe's JSON line
  "$VENV/bin/python" "$ROOT/bench/rdkafka_perf.py" --bootstrap $BS --topic probe --acks all \
    --rate "$RATE" --records $((RATE * $1))
}

start_strata false fill
"$VENV/bin/python" - $BS <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for t, cfg in (("dirty", {"cleanup.policy": "compact", "segment.bytes": str(64 << 20)}), ("probe", {})):
    a.create_topics([NewTopic(t, num_partitions=1, replication_factor=1, config=cfg)])[t].result(60)
PY
echo "filling: $MIB MiB over 10000 keys" >&2
FILL=$("$VENV/bin/python" "$ROOT/bench/rdkafka_perf.py" --bootstrap $BS --topic dirty --acks 1 \
  --keys 10000 --records $((MIB * 1024)))
echo "probe, cleaner off" >&2
IDLE=$(probe 10)
kill $SPID; wait $SPID 2>/dev/null || true

start_strata true clean
T0=$(date +%s.%N)
echo "probe, cleaner on (it cleans the whole dirty log after a restart)" >&2
BUSY=$(probe 10)
T1=$(date +%s.%N)
# Until the cleaner has passed over the whole log (bounded).
for _ in $(seq 1 600); do
  grep -q 'cleaned log topic="dirty"' "$WORK/clean.log" && break
  sleep 1
done
kill $SPID; wait $SPID 2>/dev/null || true

python3 - "$MIB" "$RATE" "$FILL" "$IDLE" "$BUSY" "$T0" "$T1" "$WORK/clean.log" <<'PY'
import datetime, json, os, re, sys
mib, rate, fill, idle, busy, t0, t1, log = sys.argv[1:9]
idle, busy, fill = json.loads(idle), json.loads(busy), json.loads(fill)
passes = []
for line in open(log):
    if 'cleaned log topic="dirty"' not in line:
        continue
    f = dict(re.findall(r"(\w+)=([0-9.]+)", line))
    ts = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    passes.append((ts, float(f["bytes_read"]), float(f["bytes_written"]), float(f["seconds"]),
                   int(f["records_removed"])))
read = sum(p[1] for p in passes)
secs = sum(p[3] for p in passes)
load = os.getloadavg()
throttle = os.environ.get("CLEANER_THROTTLE", "0")
print(f"### Log cleaner — {datetime.datetime.now():%Y-%m-%d %H:%M} ({mib} MiB of 1 KiB records over "
      f"10,000 keys, one partition; probe {rate} rec/s acks=all; cleaner throttle {throttle} B/s (0: none); "
      f"load {load[0]:.2f} at the end)\n")
print(f"- fill (cleaner off): {fill['mb_per_sec']} MB/s")
if passes:
    first_end = passes[0][0]
    overlap = max(0.0, min(float(t1), first_end) - max(float(t0), first_end - passes[0][3]))
    print(f"- cleaner: {len(passes)} pass(es), {read / 1e6:.0f} MB read, {sum(p[2] for p in passes) / 1e6:.1f} MB "
          f"written, {sum(p[4] for p in passes)} records removed, in {secs:.1f} s of cleaning: "
          f"**{int(mib) / secs:.0f} MiB/s of dirty log** ({read / 1e6 / secs:.0f} MB/s read: a pass reads the "
          f"log twice, for the key map and to rewrite it); the first pass overlapped the probe for "
          f"{overlap:.1f} s of its {float(t1) - float(t0):.1f} s")
else:
    print("- cleaner: no pass finished within 10 min")
print()
print("| probe producer | p50 ms | p99 ms | p99.9 ms | records/s |")
print("| --- | --- | --- | --- | --- |")
for name, r in (("cleaner idle (off)", idle), ("cleaner running", busy)):
    print(f"| {name} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['records_per_sec']} |")
PY
