#!/usr/bin/env bash
# Transactional vs plain producer throughput, Apache Kafka (KRaft, single node) and
# strata-broker (release) one after the other on this machine, with Kafka's Java
# client (bench/TxnBench.java): acks=all, idempotent, 1 KiB records, a 3-partition
# topic; plain, then transactions of 100 and of 1000 records.
# Usage: bench/txn.sh [records]   — prints a Markdown block to append to RESULTS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RECORDS="${1:-300000}"
WORK="$(mktemp -d /tmp/strata-bench-txn.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
java_cmd 1g
javac -d "$WORK/classes" -cp "$LIBS/*" "$ROOT/bench/TxnBench.java"
BENCH=(java -Xmx1g -Dlog4j2.configurationFile="$WORK/log4j2.properties" -Dbench.log="$WORK/java.log"
       -cp "$WORK/classes:$LIBS/*" TxnBench)

suite() { # name bootstrap → "plain|txn100|txn1000" as "records/s MB/s"
  local bs=$2 out=() t
  "$VENV/bin/python" - "$bs" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for t in ("warm", "plain", "t100", "t1000"):
    a.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])[t].result(60)
PY
  "${BENCH[@]}" "$bs" warm $((RECORDS / 3)) 100 >/dev/null # JIT and coordinator warm-up
  out+=("$("${BENCH[@]}" "$bs" plain "$RECORDS" 0)")
  out+=("$("${BENCH[@]}" "$bs" t100 "$RECORDS" 100)")
  out+=("$("${BENCH[@]}" "$bs" t1000 "$RECORDS" 1000)")
  (IFS='|'; echo "${out[*]}")
}

start_kafka
KAFKA=$(suite kafka 127.0.0.1:29092)
kill $KPID; wait $KPID 2>/dev/null || true

STRATA_KAFKA_LISTEN=127.0.0.1:39092 STRATA_METRICS_LISTEN=127.0.0.1:39644 STRATA_ADMIN_LISTEN=127.0.0.1:39093 \
  "$STRATA" dev --data-dir "$WORK/strata" > "$WORK/strata.out" 2>&1 &
SPID=$!
wait_port 127.0.0.1 39092
STRATA_RESULT=$(suite strata 127.0.0.1:39092)
kill $SPID; wait $SPID 2>/dev/null || true

python3 - "$RECORDS" "$KAFKA" "$STRATA_RESULT" <<'PY'
import sys, datetime, os
n, k, s = sys.argv[1], sys.argv[2].split("|"), sys.argv[3].split("|")
rate = lambda x: float(x.split()[0])
load = os.getloadavg()
print(f"### Transactions vs plain producer — {datetime.datetime.now():%Y-%m-%d %H:%M} "
      f"({n} x 1 KiB, acks=all, load {load[0]:.2f} at the end)\n")
print("| producer | Kafka rec/s | Strata rec/s | Strata / Kafka | Kafka vs its plain | Strata vs its plain |")
print("| --- | --- | --- | --- | --- | --- |")
for name, a, b in zip(("plain", "txn of 100", "txn of 1000"), k, s):
    print(f"| {name} | {rate(a):.0f} | {rate(b):.0f} | {rate(b)/rate(a):.2f}x | "
          f"{rate(a)/rate(k[0]):.2f} | {rate(b)/rate(s[0]):.2f} |")
PY
