# The workloads of bench/cpu.sh and bench/profile.sh (sourced, not run). Expects
# ROOT, WORK, RECORDS, OMB_RATE, OMB_SECONDS, JAVA (Kafka's tools) and the helpers
# of lib.sh. Each phase writes $WORK/<side>-<phase>.txt: a first line with the
# brokers' CPU ticks, wall seconds and RSS (KiB) over the phase, then the client's
# output. With PERF_PID set, `perf record` samples that process during each phase
# into $WORK/<side>-<phase>.perf.

CLIENT=(java -Xms512m -Xmx512m -Dlog4j2.configurationFile="$WORK/log4j2.properties" -Dbench.log="$WORK/java.log" -cp "$LIBS/*")
javac -d "$WORK/classes" -cp "$LIBS/*" "$ROOT/bench/OmbBench.java"

producer() { # bootstrap topic records acks
  "${CLIENT[@]}" org.apache.kafka.tools.ProducerPerformance --topic "$2" --num-records "$3" \
    --record-size 1024 --throughput -1 --producer-props bootstrap.servers="$1" acks="$4" 2>&1 | tail -1
}

consumer() { # bootstrap topic records
  "${CLIENT[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$1" --topic "$2" \
    --messages "$3" --timeout 60000 --hide-header 2>&1 | tail -1
}

omb() { # bootstrap
  java -Xms1g -Xmx1g -Dlog4j2.configurationFile="$WORK/log4j2.properties" -Dbench.log="$WORK/java.log" \
    -cp "$WORK/classes:$LIBS/*" OmbBench "$1" omb 4 4 "$OMB_RATE" 5 "$OMB_SECONDS"
}

# measure SIDE PHASE PID... -- COMMAND...: runs the command; records the brokers'
# CPU, the wall time and their RSS at the end.
measure() {
  local side=$1 phase=$2; shift 2
  local pids=()
  while [ "$1" != "--" ]; do pids+=("$1"); shift; done
  shift
  local out="$WORK/$side-$phase.txt" perf_pid="" c0 c1 t0 t1
  if [ -n "${PERF_PID:-}" ]; then
    perf record -F 499 --call-graph dwarf,16384 -p "$PERF_PID" -o "$WORK/$side-$phase.perf" \
      >/dev/null 2>"$WORK/$side-$phase.perf.log" &
    perf_pid=$!
    sleep 0.5
  fi
  c0=$(cpu_ticks "${pids[@]}"); t0=$(date +%s.%N)
  local result
  result=$("$@")
  c1=$(cpu_ticks "${pids[@]}"); t1=$(date +%s.%N)
  echo "$((c1 - c0)) $(python3 -c "print(round($t1 - $t0, 3))") $(rss_kib "${pids[@]}") $(cut -d' ' -f1 /proc/loadavg)" > "$out"
  echo "$result" >> "$out"
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  echo "$side $phase: $(head -1 "$out") | $result" >&2
}

# run_side SIDE BOOTSTRAP PID...: the topics, a warm-up, then every phase.
run_side() {
  local side=$1 bs=$2; shift 2
  create_topics "$bs" warm:6:3:2 p1:6:1 pall:6:3:2 omb:100:3:2
  # Warm-up of both sides alike (Kafka's JIT, Strata's page cache and allocator).
  producer "$bs" warm $((RECORDS / 2)) all >/dev/null
  consumer "$bs" warm $((RECORDS / 2)) >/dev/null
  measure "$side" acks1 "$@" -- producer "$bs" p1 "$RECORDS" 1
  measure "$side" acksall "$@" -- producer "$bs" pall "$RECORDS" all
  measure "$side" consume "$@" -- consumer "$bs" pall "$RECORDS"
  measure "$side" omb "$@" -- omb "$bs"
  measure "$side" idle "$@" -- sleep 10
}
