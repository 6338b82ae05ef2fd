#!/usr/bin/env bash
# Where a Strata broker spends its CPU under each workload of bench/cpu.sh: runs the
# Strata side only (`strata-broker dev --brokers 3`, release) with `perf record -F 499
# --call-graph dwarf` on broker 1 during each phase, then prints the top frames of
# each profile, self and inclusive (children), as Markdown for RESULTS.md.
# Usage: bench/profile.sh [records] [OMB records/s]; needs `perf` (perf_event_paranoid
# <= 2 is enough for our own processes). PERF_KEEP=dir keeps the perf.data files.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RECORDS="${1:-500000}"
OMB_RATE="${2:-10000}"
OMB_SECONDS="${OMB_SECONDS:-20}"
WORK="$(mktemp -d /tmp/strata-bench-prof.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
java_cmd 1g
source "$ROOT/bench/workloads.sh"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

start_strata3
PERF_PID=${SPIDS[0]} run_side strata "127.0.0.1:39092,127.0.0.2:39092,127.0.0.3:39092" "${SPIDS[@]}"
stop_pids "$SDEV"; stop_pids "${SPIDS[@]}"
if [ -n "${PERF_KEEP:-}" ]; then mkdir -p "$PERF_KEEP"; cp "$WORK"/*.perf "$WORK"/*.txt "$PERF_KEEP/"; fi

echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — Strata broker 1 profiles (\`bench/profile.sh $RECORDS $OMB_RATE\`)"
echo
echo "perf record -F 499 --call-graph dwarf of broker 1 of \`strata-broker dev --brokers 3\` during each phase of"
echo "bench/cpu.sh; load average at the start $LOAD_START. Self: frames over 1.5% of the samples; inclusive: Strata frames over 3%."
# top PERF_FILE --children|--no-children PERCENT LINES: the profile's frames by symbol,
# one line each (inlined frames folded into their caller), names cut at 160 chars.
top() {
  perf report -i "$1" "$2" --stdio --sort symbol -g none --no-inline --percent-limit "$3" 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | sed -E 's/ +- +- *$//; s/ +$//' | cut -c1-160 | head -"$4" || true
}
for phase in acks1 acksall consume omb idle; do
  f="$WORK/strata-$phase.perf"
  [ -s "$f" ] || continue
  echo
  echo "### $phase ($(head -1 "$WORK/strata-$phase.txt" | awk '{print "3 brokers: " $1 " ticks in " $2 " s, load " $4}'))"
  echo
  echo "Self (top frames):"
  echo '```'
  top "$f" --no-children 1.5 25
  echo '```'
  echo "Inclusive (children), Strata's own frames:"
  echo '```'
  top "$f" --children 3 400 | grep 'strata_broker::' | head -25 || true
  echo '```'
done
