# Shared setup of the benchmark scripts (sourced, not run): Kafka jars from Maven
# Central, the Python clients, a release strata-broker, a quiet log4j config for the
# JVM tools, and a port wait. Expects ROOT and WORK to be set.
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
KVER=4.1.1
# scripts/setup.sh fetches Kafka's jars (and the Python clients) into the cache.
bash "$ROOT/scripts/setup.sh" >&2
LIBS="$(cat "$CACHE/current-kafka-libs")"
VENV="$(cat "$CACHE/current-venv")"
(cd "$ROOT" && cargo build --release -p strata-broker >&2)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
STRATA="$TARGET/release/strata-broker"

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

# start_kafka: formats and starts a single-node KRaft Kafka on 127.0.0.1:29092 in
# $WORK/kafka (its pid in KPID) and waits until it listens.
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
"${JAVA[@]}" kafka.tools.StorageTool format -t "$("${JAVA[@]}" kafka.tools.StorageTool random-uuid)" \
  -c "$WORK/kafka/server.properties" >/dev/null
"${JAVA[@]}" kafka.Kafka "$WORK/kafka/server.properties" > "$WORK/kafka.out" 2>&1 &
KPID=$!
wait_port 127.0.0.1 29092
sleep 2
}
