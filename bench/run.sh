#!/usr/bin/env bash
# Side-by-side benchmark on this machine: Apache Kafka (KRaft, single node, from Maven
# Central) and strata-broker (release build), each driven by the same clients:
# Kafka's ProducerPerformance / ConsumerPerformance (Java) and a librdkafka producer.
# 1 KiB records, acks=1, a 3-partition topic; then a 3-consumer group reading it.
# Usage: bench/run.sh [records]   — prints a Markdown block to append to RESULTS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RECORDS="${1:-1000000}"
RDK_RECORDS=$((RECORDS / 2))
WORK="$(mktemp -d /tmp/strata-bench.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
java_cmd 1g

create_topic() { # bootstrap
  "$VENV/bin/python" - "$1" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
a.create_topics([NewTopic("bench", num_partitions=3, replication_factor=1)])["bench"].result(60)
PY
}

run_suite() { # name bootstrap
  local name=$1 bs=$2
  create_topic "$bs"
  local pp cp rdk grp
  pp=$("${JAVA[@]}" org.apache.kafka.tools.ProducerPerformance --topic bench --num-records "$RECORDS" \
        --record-size 1024 --throughput -1 --producer-props bootstrap.servers="$bs" acks=1 2>&1 | tail -1)
  cp=$("${JAVA[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bs" --topic bench \
        --messages "$RECORDS" --timeout 60000 --hide-header 2>&1 | tail -1)
  rdk=$("$VENV/bin/python" "$ROOT/bench/rdkafka_perf.py" --bootstrap "$bs" --topic bench --records "$RDK_RECORDS" --acks 1)
  # A group of three consumers reading the topic from the start.
  local total=$((RECORDS + RDK_RECORDS)) t0 t1
  t0=$(date +%s.%N)
  for i in 1 2 3; do
    "${JAVA[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bs" --topic bench \
      --messages $((total / 3)) --group "bench-group-$name" --timeout 60000 --hide-header > "$WORK/grp-$name-$i.txt" 2>&1 &
  done
  wait $(jobs -p | tail -3) || true
  t1=$(date +%s.%N)
  grp=$(python3 -c "print(round($total*1024/($t1-$t0)/1e6,1))")
  echo "$name|$pp|$cp|$rdk|$grp"
}

# --- Apache Kafka ---
start_kafka
KAFKA_LINE=$(run_suite kafka 127.0.0.1:29092)
kill $KPID; wait $KPID 2>/dev/null || true

# --- Strata ---
STRATA_KAFKA_LISTEN=127.0.0.1:39092 STRATA_METRICS_LISTEN=127.0.0.1:39644 STRATA_ADMIN_LISTEN=127.0.0.1:39093 STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 \
  "$STRATA" dev --data-dir "$WORK/strata" > "$WORK/strata.out" 2>&1 &
SPID=$!
wait_port 127.0.0.1 39092
STRATA_LINE=$(run_suite strata 127.0.0.1:39092)
kill $SPID; wait $SPID 2>/dev/null || true

"$VENV/bin/python" "$ROOT/bench/report.py" "$RECORDS" "$KAFKA_LINE" "$STRATA_LINE"
