#!/usr/bin/env bash
# Broker CPU per byte, side by side on this machine: a 3-node Apache Kafka 4.1.1
# KRaft cluster (combined nodes, JVM -Xmx1g each, 127.0.0.1-3) and
# `strata-broker dev --brokers 3` (release), one after the other with the same Java
# clients. Phases (bench/workloads.sh), after a warm-up of both: ProducerPerformance
# acks=1 (6 partitions, RF=1), acks=all (6 partitions, RF=3, min.insync.replicas=2),
# ConsumerPerformance reading the acks=all topic, the OMB-like fixed-rate workload
# (bench/OmbBench.java: 100 partitions RF=3, 4 producers, 4 consumers, acks=all,
# linger.ms=1, batch.size=131072) and 10 s idle. For each: the three brokers'
# CPU-seconds (utime+stime from /proc/<pid>/stat) per GiB, MB/s, latency
# percentiles, RSS and the load average.
# Usage: bench/cpu.sh [records] [OMB records/s]  — prints a Markdown block for RESULTS.md.
# OMB_SECONDS (default 30) sets the measured length of the fixed-rate workload;
# SIDES="strata" (or "kafka") runs one side only (A/B runs of two Strata builds with
# STRATA_BIN, see bench/lib.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RECORDS="${1:-1000000}"
OMB_RATE="${2:-10000}"
OMB_SECONDS="${OMB_SECONDS:-30}"
WORK="$(mktemp -d /tmp/strata-bench-cpu.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
java_cmd 1g
source "$ROOT/bench/workloads.sh"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

SIDES="${SIDES:-kafka strata}"
if [[ " $SIDES " == *" kafka "* ]]; then
  start_kafka3
  run_side kafka "127.0.0.1:29092,127.0.0.2:29092,127.0.0.3:29092" "${KPIDS[@]}"
  stop_pids "${KPIDS[@]}"
fi
if [[ " $SIDES " == *" strata "* ]]; then
  start_strata3
  run_side strata "127.0.0.1:39092,127.0.0.2:39092,127.0.0.3:39092" "${SPIDS[@]}"
  stop_pids "$SDEV"; stop_pids "${SPIDS[@]}"
fi

BENCH_ENV=""
[ -n "${STRATA_BIN:-}" ] && BENCH_ENV="STRATA_BIN=$STRATA_BIN "
[ "$SIDES" != "kafka strata" ] && BENCH_ENV="${BENCH_ENV}SIDES=\"$SIDES\" "
BENCH_ENV="$BENCH_ENV" \
  python3 "$ROOT/bench/cpu_report.py" "$WORK" "$RECORDS" "$OMB_RATE" "$OMB_SECONDS" "$LOAD_START" "$(getconf CLK_TCK)"
