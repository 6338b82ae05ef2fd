# Shared setup of the benchmark scripts (sourced, not run): Kafka jars from Maven
# Central, the Python clients, a release strata-broker, a quiet log4j config for the
# JVM tools, and a port wait. Expects ROOT and WORK to be set.
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
KVER=4.1.1
# scripts/setup.sh fetches Kafka's jars (and the Python clients) into the cache.
bash "$ROOT/scripts/setup.sh" >&2
LIBS="$(cat "$CACHE/current-kafka-libs")"
VENV="$(cat "$CACHE/current-venv")"
# STRATA_BIN=path runs that broker binary instead of building this tree's (A/B runs).
if [ -n "${STRATA_BIN:-}" ]; then
  STRATA="$STRATA_BIN"
else
  (cd "$ROOT" && cargo build --release -p strata-broker >&2)
  TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
  STRATA="$TARGET/release/strata-broker"
fi

cat > "$WORK/log4j2.properties" <<'L4J'
rootLogger.level = WARN
rootLogger.appenderRef.f.ref = F
appender.f.type = File
appender.f.name = F
appender.f.fileName = ${sys:bench.log}
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = %d %p %c - %m%n
L4J

# java_cmd HEAP: the JVM command line for Kafka's own tools and brokers.
java_cmd() {
  JAVA=(java "-Xms$1" "-Xmx$1" -Dlog4j2.configurationFile="$WORK/log4j2.properties" -Dbench.log="$WORK/java.log" -cp "$LIBS/*")
}

# wait_port HOST PORT: waits up to 60 s for a listener.
wait_port() {
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "$1:$2 not up" >&2
  return 1
}

# start_kafka [PROPERTY=VALUE...]: formats and starts a single-node KRaft Kafka on
# 127.0.0.1:29092 in $WORK/kafka (its pid in KPID) and waits until it listens. The
# arguments are appended to server.properties (a key given again overrides the
# default); KAFKA_FORMAT_ARGS (an array) adds arguments to the storage format.
start_kafka() {
mkdir -p "$WORK/kafka"
cat > "$WORK/kafka/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:29093
listeners=PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093
advertised.listeners=PLAINTEXT://127.0.0.1:29092
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$WORK/kafka/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
if [ $# -gt 0 ]; then printf '%s\n' "$@" >> "$WORK/kafka/server.properties"; fi
"${JAVA[@]}" kafka.tools.StorageTool format -t "$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)" \
  -c "$WORK/kafka/server.properties" ${KAFKA_FORMAT_ARGS[@]+"${KAFKA_FORMAT_ARGS[@]}"} >/dev/null
"${JAVA[@]}" kafka.Kafka "$WORK/kafka/server.properties" > "$WORK/kafka.out" 2>&1 &
KPID=$!
wait_port 127.0.0.1 29092
sleep 2
}

# start_kafka3: formats and starts three combined KRaft nodes on 127.0.0.1-3:29092
# in $WORK/kafkaN (their pids in KPIDS) and waits until they listen.
start_kafka3() {
  local cid voters i
  cid="$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)"
  voters="1@127.0.0.1:29093,2@127.0.0.2:29093,3@127.0.0.3:29093"
  KPIDS=()
  for i in 1 2 3; do
    mkdir -p "$WORK/kafka$i"
    cat > "$WORK/kafka$i/server.properties" <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.$i:29092,CONTROLLER://127.0.0.$i:29093
advertised.listeners=PLAINTEXT://127.0.0.$i:29092
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$WORK/kafka$i/data
offsets.topic.replication.factor=3
group.initial.rebalance.delay.ms=0
PROPS
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cid" -c "$WORK/kafka$i/server.properties" >/dev/null
  done
  for i in 1 2 3; do
    "${JAVA[@]}" kafka.Kafka "$WORK/kafka$i/server.properties" > "$WORK/kafka$i.out" 2>&1 &
    KPIDS+=($!)
  done
  for i in 1 2 3; do wait_port 127.0.0.$i 29092; done
  sleep 3
}

# start_strata3: `strata-broker dev --brokers 3` on 127.0.0.1-3:39092 with its data
# in $WORK/strata3 (the parent's pid in SDEV, the three brokers' in SPIDS). Extra
# broker settings come from the environment (STRATA_*), which the brokers inherit.
start_strata3() {
  STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 "$STRATA" dev --brokers 3 --data-dir "$WORK/strata3" \
    --kafka-port 39092 --admin-port 39093 --metrics-port 39644 > "$WORK/strata3.out" 2>&1 &
  SDEV=$!
  local i
  for i in 1 2 3; do wait_port 127.0.0.$i 39092; done
  mapfile -t SPIDS < <(pgrep -P "$SDEV")
  [ "${#SPIDS[@]}" -eq 3 ] || { echo "expected 3 broker processes under $SDEV: ${SPIDS[*]}" >&2; return 1; }
}

# stop_pids PID...: SIGTERM, then waits for them.
stop_pids() {
  kill "$@" 2>/dev/null || true
  local p
  for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
}

# cpu_ticks PID...: utime+stime (clock ticks) summed over the processes (all threads).
cpu_ticks() {
  local p t=0 f
  for p in "$@"; do
    # Fields after "pid (comm) ": utime and stime are the 12th and 13th.
    f=$(sed 's/^.*) //' "/proc/$p/stat")
    t=$((t + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$t"
}

# rss_kib PID...: resident memory summed over the processes.
rss_kib() {
  local p t=0
  for p in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done
  echo "$t"
}

# create_topics BOOTSTRAP NAME:PARTITIONS:RF[:MIN_ISR]...: creates the topics, retrying
# while the brokers register; waits until every partition has a leader.
create_topics() {
  local bs=$1; shift
  "$VENV/bin/python" - "$bs" "$@" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for spec in sys.argv[2:]:
    name, parts, rf, *isr = spec.split(":")
    cfg = {"min.insync.replicas": isr[0]} if isr else {}
    for attempt in range(60):
        try:
            a.create_topics([NewTopic(name, num_partitions=int(parts), replication_factor=int(rf),
                                      config=cfg)])[name].result(30)
            break
        except Exception as e:  # brokers still registering
            if "already exists" in str(e):
                break
            time.sleep(1)
    for attempt in range(120):
        md = a.list_topics(name, timeout=10).topics.get(name)
        if md and len(md.partitions) == int(parts) and all(p.leader >= 0 for p in md.partitions.values()):
            break
        time.sleep(0.5)
time.sleep(1)
PY
}
