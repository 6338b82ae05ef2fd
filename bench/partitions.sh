#!/usr/bin/env bash
# Metadata cost at many partitions (strata-broker release, `dev --brokers 3`): creates
# TOPICS topics of 100 partitions each, RF=3 (so every broker holds TOPICS x 100
# partition replicas), then measures the three brokers' idle CPU (% of one core,
# utime+stime from /proc over IDLE_SECONDS, heartbeats and housekeeping only) and RSS,
# then kills broker 3 (SIGKILL) and times until no partition names it as leader
# (its lease expiring after broker_session_timeout_ms, then the elections), and the
# idle CPU of the two survivors after that.
# Usage: bench/partitions.sh [topics]  — prints a Markdown block for RESULTS.md.
# The open-file limit (ulimit -n) bounds how many replicas a broker can open.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOPICS="${1:-100}"
IDLE_SECONDS="${IDLE_SECONDS:-30}"
WORK="$(mktemp -d /tmp/strata-bench-parts.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
BS="127.0.0.1:39092,127.0.0.2:39092,127.0.0.3:39092"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
HZ=$(getconf CLK_TCK)

start_strata3
T0=$(date +%s.%N)
"$VENV/bin/python" - "$BS" "$TOPICS" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
names = [f"many-{i:04d}" for i in range(int(sys.argv[2]))]
for attempt in range(60):
    try:
        a.create_topics([NewTopic("many-probe", 1, 3)])["many-probe"].result(30)
        break
    except Exception as e:
        if "already exists" in str(e):
            break
        time.sleep(1)
for i in range(0, len(names), 10):
    fs = a.create_topics([NewTopic(n, 100, 3) for n in names[i:i + 10]], request_timeout=120)
    for n, f in fs.items():
        f.result(180)
# Until every partition has a leader.
deadline = time.time() + 600
while time.time() < deadline:
    md = a.list_topics(timeout=60).topics
    parts = [p for n in names for p in md[n].partitions.values()] if all(n in md for n in names) else []
    if len(parts) == 100 * len(names) and all(p.leader >= 0 for p in parts):
        break
    time.sleep(1)
else:
    sys.exit("partitions without a leader after 10 min")
PY
T1=$(date +%s.%N)
sleep 10 # the creation's tail (fsyncs, the first ISR rounds)
idle() { # seconds pid... → "cpu% cpu% cpu%"
  local s=$1; shift
  local before=() p i=0 out=()
  for p in "$@"; do before+=("$(cpu_ticks "$p")"); done
  sleep "$s"
  for p in "$@"; do
    out+=("$(python3 -c "print(round(100 * ($(cpu_ticks "$p") - ${before[$i]}) / $HZ / $s, 1))")")
    i=$((i + 1))
  done
  echo "${out[*]}"
}
IDLE=$(idle "$IDLE_SECONDS" "${SPIDS[@]}")
RSS=$(for p in "${SPIDS[@]}"; do echo $(( $(rss_kib "$p") / 1024 )); done | paste -sd' ')
FDS=$(for p in "${SPIDS[@]}"; do ls "/proc/$p/fd" | wc -l; done | paste -sd' ')
LED3=$("$VENV/bin/python" - "$BS" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=60).topics
print(sum(1 for t in md.values() for p in t.partitions.values() if p.leader == 3))
PY
)
K0=$(date +%s.%N)
kill -9 "${SPIDS[2]}"
FAILOVER=$("$VENV/bin/python" - "127.0.0.1:39092,127.0.0.2:39092" "$K0" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient
a = AdminClient({"bootstrap.servers": sys.argv[1]})
k0 = float(sys.argv[2])
first = None
while time.time() - k0 < 300:
    md = a.list_topics(timeout=30).topics
    led = [p for t in md.values() for p in t.partitions.values() if p.leader == 3]
    moved = sum(1 for t in md.values() for p in t.partitions.values() if 3 not in p.isrs)
    if first is None and moved:
        first = time.time() - k0
    if not led:
        print(f"{first if first is not None else time.time() - k0:.1f} {time.time() - k0:.1f}")
        break
    time.sleep(0.2)
else:
    print("none 300+")
PY
)
sleep 5
IDLE2=$(idle "$IDLE_SECONDS" "${SPIDS[0]}" "${SPIDS[1]}")
stop_pids "$SDEV"; stop_pids "${SPIDS[0]}" "${SPIDS[1]}"

python3 - "$TOPICS" "$T0" "$T1" "$IDLE" "$RSS" "$FDS" "$LED3" "$FAILOVER" "$IDLE2" "$LOAD_START" "$IDLE_SECONDS" <<'PY'
import datetime, os, sys
topics, t0, t1, idle, rss, fds, led3, failover, idle2, load, secs = sys.argv[1:12]
n = int(topics) * 100
first, done = failover.split()
print(f"## {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC — {n} partitions, RF=3: {n} replicas per broker "
      f"(`bench/partitions.sh {topics}`)\n")
print(f"`strata-broker dev --brokers 3` (release), {topics} topics x 100 partitions, load average at the start {load}, "
      f"{os.getloadavg()[0]:.2f} at the end.\n")
print(f"- created and led in {float(t1) - float(t0):.1f} s")
print(f"- idle CPU over {secs} s, % of one core, brokers 1 2 3: {idle}; RSS MiB: {rss}; open files: {fds}")
print(f"- kill -9 of broker 3 (leader of {led3} partitions): first partition without it in its ISR after "
      f"{first} s, no partition led by it after **{done} s** (broker_session_timeout_ms 6000 included)")
print(f"- idle CPU of brokers 1 2 after the failover: {idle2}")
PY
