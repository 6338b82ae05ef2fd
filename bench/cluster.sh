#!/usr/bin/env bash
# Three brokers side by side on this machine: Apache Kafka (KRaft, three combined
# broker+controller nodes on 127.0.0.1-3) and Strata (three brokers, three voters on
# 127.0.0.1-3). Same clients: Kafka's ProducerPerformance and a librdkafka producer,
# 1 KiB records, acks=all, a 3-partition topic with RF=3 and min.insync.replicas=2.
# Usage: bench/cluster.sh [records]  — prints a Markdown block to append to RESULTS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RECORDS="${1:-300000}"
RDK_RECORDS=$((RECORDS / 2))
WORK="$(mktemp -d /tmp/strata-bench3.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
java_cmd 1g

create_topic() { # bootstrap
  "$VENV/bin/python" - "$1" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for attempt in range(60):
    try:
        a.create_topics([NewTopic("bench", num_partitions=3, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])["bench"].result(30)
        break
    except Exception as e:  # brokers still registering
        if "already exists" in str(e):
            break
        time.sleep(1)
time.sleep(2)
PY
}

run_suite() { # name bootstrap
  local name=$1 bs=$2 pp rdk
  create_topic "$bs"
  pp=$("${JAVA[@]}" org.apache.kafka.tools.ProducerPerformance --topic bench --num-records "$RECORDS" \
        --record-size 1024 --throughput -1 --producer-props bootstrap.servers="$bs" acks=all 2>&1 | tail -1)
  rdk=$("$VENV/bin/python" "$ROOT/bench/rdkafka_perf.py" --bootstrap "$bs" --topic bench --records "$RDK_RECORDS" --acks all)
  echo "$name|$pp|$rdk"
}

# --- Apache Kafka: three combined KRaft nodes ---
CID="$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)"
VOTERS="1@127.0.0.1:29093,2@127.0.0.2:29093,3@127.0.0.3:29093"
for i in 1 2 3; do
  mkdir -p "$WORK/kafka$i"
  cat > "$WORK/kafka$i/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://127.0.0.$i:29092,CONTROLLER://127.0.0.$i:29093
advertised.listeners=PLAINTEXT://127.0.0.$i:29092
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$WORK/kafka$i/data
offsets.topic.replication.factor=3
group.initial.rebalance.delay.ms=0
PROPS
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$CID" -c "$WORK/kafka$i/server.properties" >/dev/null
done
KPIDS=()
for i in 1 2 3; do
  "${JAVA[@]}" kafka.Kafka "$WORK/kafka$i/server.properties" > "$WORK/kafka$i.out" 2>&1 &
  KPIDS+=($!)
done
for i in 1 2 3; do wait_port 127.0.0.$i 29092; done
sleep 3
KAFKA_LINE=$(run_suite kafka "127.0.0.1:29092,127.0.0.2:29092,127.0.0.3:29092")
kill "${KPIDS[@]}"; wait "${KPIDS[@]}" 2>/dev/null || true

# --- Strata: three brokers, three voters ---
SVOTERS="1@127.0.0.1:39093,2@127.0.0.2:39093,3@127.0.0.3:39093"
SPIDS=()
for i in 1 2 3; do
  STRATA_NODE_ID=$i STRATA_CONTROLLER_VOTERS=$SVOTERS STRATA_DATA_DIR="$WORK/strata$i" \
  STRATA_KAFKA_LISTEN=127.0.0.$i:39092 STRATA_ADMIN_LISTEN=127.0.0.$i:39093 \
  STRATA_METRICS_LISTEN=127.0.0.$i:39644 STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 \
    "$STRATA" serve > "$WORK/strata$i.out" 2>&1 &
  SPIDS+=($!)
done
for i in 1 2 3; do wait_port 127.0.0.$i 39092; done
STRATA_LINE=$(run_suite strata "127.0.0.1:39092,127.0.0.2:39092,127.0.0.3:39092")
kill "${SPIDS[@]}"; wait "${SPIDS[@]}" 2>/dev/null || true

"$VENV/bin/python" - "$RECORDS" "$KAFKA_LINE" "$STRATA_LINE" <<'PY'
import json, platform, re, subprocess, sys, time
records = int(sys.argv[1])
def parse(line):
    name, pp, rdk = line.split("|")
    m = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
                  r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", pp)
    prod = dict(zip(["rps", "mbps", "avg", "max", "p50", "p95", "p99", "p999"], map(float, m.groups()))) if m else {}
    return name, prod, json.loads(rdk), pp
k, s = parse(sys.argv[2]), parse(sys.argv[3])
ratio = lambda a, b: f"{b / a:.2f}x" if a and b else "n/a"
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — 3 brokers, acks=all, RF=3, min.insync.replicas=2, 1 KiB records, 3 partitions\n")
print(f"Machine: {platform.node()}, {cpu}, 2 cores shared by all six broker processes (run one side at a time). "
      "Kafka 4.1.1 (3 combined KRaft nodes, JVM -Xmx1g each) vs 3 strata-broker (release, 3 voters).")
print(f"Command: `bench/cluster.sh {records}`. Ratios are Strata / Kafka.\n")
print("| metric | Kafka | Strata | ratio |\n| --- | --- | --- | --- |")
for name, a, b in [
    ("ProducerPerformance MB/s", k[1].get("mbps"), s[1].get("mbps")),
    ("ProducerPerformance p50 ms", k[1].get("p50"), s[1].get("p50")),
    ("ProducerPerformance p99 ms", k[1].get("p99"), s[1].get("p99")),
    ("ProducerPerformance p99.9 ms", k[1].get("p999"), s[1].get("p999")),
    ("librdkafka producer MB/s", k[2]["mb_per_sec"], s[2]["mb_per_sec"]),
    ("librdkafka producer p50 ms", k[2]["p50_ms"], s[2]["p50_ms"]),
    ("librdkafka producer p99 ms", k[2]["p99_ms"], s[2]["p99_ms"]),
]:
    print(f"| {name} | {a} | {b} | {ratio(a, b)} |")
print("\nRaw output:\n")
for r in (k, s):
    print(f"- {r[0]} ProducerPerformance: `{r[3].strip()}`")
    print(f"- {r[0]} librdkafka: `{json.dumps(r[2])}`")
print()
PY
