#!/usr/bin/env bash
# SASL_SSL against PLAINTEXT, Strata against Kafka, on this machine: one Apache Kafka
# 4.1.1 KRaft node (JVM -Xmx1g) and one `strata-broker dev` (release), one after the
# other, each serving a PLAINTEXT and a SASL_SSL listener (SCRAM-SHA-512, TLS 1.3 with
# an RSA-2048 certificate from a throwaway CA made by openssl). For each side and each
# protocol, after a warm-up over both: Kafka's ProducerPerformance (acks=1,
# batch.size=131072 and linger.ms=5, so that batching, which sets the broker's cost
# per byte, does not follow the client's speed; 1 KiB records, 6 partitions, RF=1)
# and ConsumerPerformance reading it back. Reports
# MB/s and the broker's CPU-seconds per GiB (utime+stime from /proc) per phase, and
# the load average. Kafka loses its zero-copy reads (sendfile) under TLS, and so does
# Strata (zero_copy_fetch applies to plaintext listeners only).
# Usage: bench/tls.sh [records]  — prints a Markdown block for RESULTS.md.
# SIDES="strata" (or "kafka") runs one side only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RECORDS="${1:-1000000}"
WORK="$(mktemp -d /tmp/strata-bench-tls.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"
java_cmd 1g
CLIENT=(java -Xms512m -Xmx512m -Dlog4j2.configurationFile="$WORK/log4j2.properties" -Dbench.log="$WORK/java.log" -cp "$LIBS/*")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
USER_NAME=bench
PASSWORD=bench-secret-0123456789

# The throwaway CA and the brokers' certificate (SAN IP:127.0.0.1).
PKI="$WORK/pki"
mkdir -p "$PKI"
(
  cd "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 \
    -subj "/CN=Strata Bench CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
    -subj "/CN=bench-broker" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 1 \
    -out server.pem -extfile server.ext 2>/dev/null
  # Kafka's PEM keystore: the PKCS#8 key and the chain in one file.
  openssl pkcs8 -topk8 -nocrypt -in server.key -out server.p8
  cat server.p8 server.pem > keystore.pem
)

# Client configs of Kafka's perf tools for each protocol.
printf '' > "$WORK/plaintext.properties"
cat > "$WORK/sasl_ssl.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$USER_NAME" password="$PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$PKI/ca.pem
PROPS

producer() { # bootstrap topic records client-config
  "${CLIENT[@]}" org.apache.kafka.tools.ProducerPerformance --topic "$2" --num-records "$3" \
    --record-size 1024 --throughput -1 --producer.config "$4" \
    --producer-props bootstrap.servers="$1" acks=1 batch.size=131072 linger.ms=5 2>&1 | tail -1
}

consumer() { # bootstrap topic records client-config
  "${CLIENT[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$1" --topic "$2" \
    --messages "$3" --timeout 60000 --hide-header --consumer.config "$4" 2>&1 | tail -1
}

measure() { # side phase pid -- command...
  local side=$1 phase=$2 pid=$3; shift 4
  local out="$WORK/$side-$phase.txt" c0 c1 t0 t1 result
  # Earlier phases' dirty pages are written back first: otherwise the page-cache
  # pressure they leave makes whichever phase comes later pay for the copy into the
  # page cache (seen as several times the CPU per GiB, on both brokers).
  sync
  c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  result=$("$@")
  c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
  echo "$((c1 - c0)) $(python3 -c "print(round($t1 - $t0, 3))") $(rss_kib "$pid") $(cut -d' ' -f1 /proc/loadavg)" > "$out"
  echo "$result" >> "$out"
  echo "$side $phase: $(head -1 "$out") | $result" >&2
}

# run_side SIDE PID PLAINTEXT_BOOTSTRAP SASL_SSL_BOOTSTRAP
run_side() {
  local side=$1 pid=$2 plain=$3 secure=$4 proto bs conf
  create_topics "$plain" warm-plaintext:6:1 warm-sasl_ssl:6:1 plaintext:6:1 sasl_ssl:6:1
  # Both protocols warm up (Kafka's JIT of both paths) before anything is measured.
  for proto in plaintext sasl_ssl; do
    bs=$plain; [ "$proto" = sasl_ssl ] && bs=$secure
    conf="$WORK/$proto.properties"
    producer "$bs" "warm-$proto" "$RECORDS" "$conf" >/dev/null
    consumer "$bs" "warm-$proto" "$RECORDS" "$conf" >/dev/null
  done
  for proto in plaintext sasl_ssl; do
    bs=$plain; [ "$proto" = sasl_ssl ] && bs=$secure
    conf="$WORK/$proto.properties"
    measure "$side" "produce-$proto" "$pid" -- producer "$bs" "$proto" "$RECORDS" "$conf"
    measure "$side" "consume-$proto" "$pid" -- consumer "$bs" "$proto" "$RECORDS" "$conf"
  done
}

SIDES="${SIDES:-kafka strata}"
if [[ " $SIDES " == *" kafka "* ]]; then
  KAFKA_FORMAT_ARGS=(--add-scram "SCRAM-SHA-512=[name=$USER_NAME,password=$PASSWORD]")
  start_kafka \
    "listeners=PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093,SASL_SSL://127.0.0.1:29094" \
    "advertised.listeners=PLAINTEXT://127.0.0.1:29092,SASL_SSL://127.0.0.1:29094" \
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL" \
    "inter.broker.listener.name=PLAINTEXT" \
    "sasl.enabled.mechanisms=SCRAM-SHA-512" \
    "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
    "ssl.keystore.type=PEM" \
    "ssl.keystore.location=$PKI/keystore.pem"
  wait_port 127.0.0.1 29094
  run_side kafka "$KPID" 127.0.0.1:29092 127.0.0.1:29094
  stop_pids "$KPID"
fi
if [[ " $SIDES " == *" strata "* ]]; then
  # No tiering (dev mode tiers to a local directory by default; Kafka does not):
  # uploads of the warm-up's segments would run during the measured phases.
  STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 STRATA_TIER_ENABLE_BY_DEFAULT=false \
  STRATA_LISTENERS="PLAINTEXT://127.0.0.1:39092,SASL_SSL://127.0.0.1:39094" \
  STRATA_SSL_CERTIFICATE_LOCATION="$PKI/server.pem" STRATA_SSL_KEY_LOCATION="$PKI/server.key" \
  STRATA_SASL_ENABLED_MECHANISMS=SCRAM-SHA-512 STRATA_KAFKA_LISTEN=127.0.0.1:39092 \
  STRATA_ADMIN_LISTEN=127.0.0.1:39093 STRATA_METRICS_LISTEN=127.0.0.1:39644 \
    "$STRATA" dev --data-dir "$WORK/strata" > "$WORK/strata.out" 2>&1 &
  SPID=$!
  wait_port 127.0.0.1 39092
  wait_port 127.0.0.1 39094
  "${JAVA[@]}" kafka.admin.ConfigCommand --bootstrap-server 127.0.0.1:39092 --entity-type users \
    --entity-name "$USER_NAME" --alter --add-config "SCRAM-SHA-512=[password=$PASSWORD]" >/dev/null
  run_side strata "$SPID" 127.0.0.1:39092 127.0.0.1:39094
  # How the fetched bytes left the broker (sendfile or through memory).
  curl -sf http://127.0.0.1:39644/metrics | grep '^strata_fetch_record_bytes' > "$WORK/strata-fetch-paths.txt" || true
  stop_pids "$SPID"
fi

BENCH_ENV=""
[ -n "${STRATA_BIN:-}" ] && BENCH_ENV="STRATA_BIN=$STRATA_BIN "
echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — SASL_SSL vs PLAINTEXT (\`${BENCH_ENV}bench/tls.sh $RECORDS\`)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average at start: $LOAD_START; strata at $(cd "$ROOT" && git rev-parse --short HEAD)."
echo
python3 "$ROOT/bench/tls_report.py" "$WORK" "$RECORDS" $SIDES
