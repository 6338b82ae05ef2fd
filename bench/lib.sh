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
