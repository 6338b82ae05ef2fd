#!/usr/bin/env bash
# Consumer catch-up from the tier vs from local disk, on this machine.
#
# strata-broker (release build) tiers to a real SeaweedFS S3 server on loopback. Two
# single-partition topics get the same data (1 KiB records, Kafka's ProducerPerformance):
#   tiered  remote.storage.enable=true, 64 MiB segments, local.retention.bytes=64 MiB,
#           so after upload almost everything is only in the bucket;
#   local   not tiered, everything on local disk.
# Then Kafka's ConsumerPerformance reads each topic from offset 0: `tiered` first, with
# the broker's chunk cache cold (nothing was read from the tier before), then `local`.
# Usage: bench/tier_catchup.sh [MiB]  (default 1024) — prints a Markdown block for
# bench/RESULTS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
KVER=4.1.1
LIBS="$CACHE/kafka-$KVER/libs"
MIB="${1:-1024}"
RECORDS=$((MIB * 1024))
WORK="$(mktemp -d /tmp/strata-tierbench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -f "$LIBS/kafka_2.13-$KVER.jar" ]; then
  echo "fetching Kafka $KVER jars into $LIBS" >&2
  mvn -q -f "$ROOT/bench/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIBS" >&2
fi
VENV="$(cat "$CACHE/current-venv")"
WEED="${WEED:-$CACHE/k8s-1.34.4/bin/weed}"
(cd "$ROOT" && cargo build --release -p strata-broker --bin strata-broker >&2)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
STRATA="$TARGET/release/strata-broker"
JAVA=(java -Xms1g -Xmx1g -Dlog4j2.configurationFile=/dev/null -cp "$LIBS/*")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }

# --- SeaweedFS (master, volume, filer and S3 gateway in one process) ---
P=(); for _ in $(seq 1 10); do P+=("$(free_port)"); done
mkdir -p "$WORK/weed"
cat > "$WORK/s3.json" <<'JSON'
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
"$WEED" server -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="${P[0]}" -master.port.grpc="${P[1]}" -master.volumeSizeLimitMB=1024 -master.telemetry=false \
  -volume.port="${P[2]}" -volume.port.grpc="${P[3]}" -volume.max=0 -volume.preStopSeconds=0 \
  -filer -filer.port="${P[4]}" -filer.port.grpc="${P[5]}" \
  -s3 -s3.port="${P[6]}" -s3.port.grpc="${P[7]}" -s3.port.iceberg="${P[8]}" -s3.port.lance="${P[9]}" \
  -s3.config="$WORK/s3.json" > "$WORK/weed.log" 2>&1 &
PIDS+=($!)
wait_port "${P[6]}"
for _ in $(seq 1 60); do
  if printf 's3.bucket.create -name bench\ns3.bucket.list\nexit\n' |
      timeout 20 "$WEED" shell -master="127.0.0.1:${P[0]}.${P[1]}" 2>/dev/null | grep -q '^ *bench'; then
    break
  fi
  sleep 1
done

# --- Strata ---
KPORT=$(free_port); MPORT=$(free_port); APORT=$(free_port)
STRATA_KAFKA_LISTEN=127.0.0.1:$KPORT STRATA_METRICS_LISTEN=127.0.0.1:$MPORT STRATA_ADMIN_LISTEN=127.0.0.1:$APORT \
STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 STRATA_TIER_BUCKET=bench STRATA_TIER_ENDPOINT="http://127.0.0.1:${P[6]}" \
STRATA_TIER_ACCESS_KEY_ID=bench STRATA_TIER_SECRET_ACCESS_KEY=bench-secret STRATA_TIER_PREFIX=bench \
STRATA_TIER_UPLOAD_INTERVAL_MS=1000 STRATA_RETENTION_CHECK_INTERVAL_MS=1000 STRATA_LOG_FORMAT=text \
  "$STRATA" dev --data-dir "$WORK/strata" > "$WORK/strata.log" 2>&1 &
PIDS+=($!)
wait_port "$KPORT"
BS=127.0.0.1:$KPORT

"$VENV/bin/python" - "$BS" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
mib = str(64 << 20)
fs = a.create_topics([
    NewTopic("tiered", 1, 1, config={"remote.storage.enable": "true", "segment.bytes": mib,
                                     "local.retention.bytes": mib, "retention.ms": "-1"}),
    NewTopic("local", 1, 1, config={"remote.storage.enable": "false", "segment.bytes": mib,
                                    "retention.ms": "-1"}),
])
for f in fs.values():
    f.result(60)
PY

for t in tiered local; do
  "${JAVA[@]}" org.apache.kafka.tools.ProducerPerformance --topic $t --num-records "$RECORDS" \
    --record-size 1024 --throughput -1 --producer-props bootstrap.servers="$BS" acks=1 linger.ms=5 \
    batch.size=262144 > "$WORK/produce-$t.txt" 2>&1
done

# Wait until the tiered topic's closed segments are uploaded and deleted locally.
local_mib() { find "$WORK/strata/$1-0" -name '*.log' -printf '%s\n' | awk '{s+=$1} END {print int(s/1048576)}'; }
for _ in $(seq 1 600); do
  lag=$(curl -s "127.0.0.1:$MPORT/metrics" | awk '/^strata_tier_upload_lag_segments\{.*topic="tiered"/ {print $NF}')
  if [ "${lag:-1}" = "0" ] && [ "$(local_mib tiered)" -le 192 ]; then break; fi
  sleep 1
done
TIERED_LOCAL=$(local_mib tiered); LOCAL_LOCAL=$(local_mib local)
REMOTE_MIB=$(curl -s "127.0.0.1:$MPORT/metrics" | awk '/^strata_tier_uploaded_bytes_total\{.*topic="tiered"/ {print int($NF/1048576)}')

consume() { # topic -> "MB.sec fetch.MB.sec seconds"
  "${JAVA[@]}" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BS" --topic "$1" \
    --messages "$RECORDS" --timeout 120000 --hide-header --group "catchup-$1" 2>/dev/null | tail -1 |
    awk -F', *' '{print $4, $9, $8/1000}'
}
read -r T_MBS T_FMBS T_SECS < <(consume tiered)
HITS=$(curl -s "127.0.0.1:$MPORT/metrics" | awk '/^strata_tier_cache_hits_total/ {s+=$NF} END {print s+0}')
MISSES=$(curl -s "127.0.0.1:$MPORT/metrics" | awk '/^strata_tier_cache_misses_total/ {s+=$NF} END {print s+0}')
TIER_BYTES=$(curl -s "127.0.0.1:$MPORT/metrics" | awk '/^strata_tier_fetch_bytes_total/ {s+=$NF} END {print int(s/1048576)}')
read -r L_MBS L_FMBS L_SECS < <(consume local)
RATIO=$(python3 -c "print(f'{$T_FMBS/$L_FMBS:.2f}')")

cat <<EOF
### Tier catch-up ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))

\`bench/tier_catchup.sh $MIB\` — strata-broker release build, SeaweedFS $("$WEED" version 2>/dev/null | head -1 | awk '{print $3}') on loopback,
${MIB} MiB of 1 KiB records per single-partition topic, Kafka ConsumerPerformance ($KVER) from offset 0.
\`tiered\`: ${TIERED_LOCAL} MiB left on local disk, ${REMOTE_MIB} MiB in the bucket, ${TIER_BYTES} MiB served from the tier,
chunk cache 256 MiB / 4 MiB chunks / read-ahead ${STRATA_TIER_READ_AHEAD_CHUNKS:-4}, cold at start (cache hits ${HITS}, misses ${MISSES}).

| read from | MB/s (incl. group join) | fetch MB/s | seconds |
| --- | --- | --- | --- |
| tier (cold cache) | $T_MBS | $T_FMBS | $T_SECS |
| local disk | $L_MBS | $L_FMBS | $L_SECS |

Tier / local (fetch MB/s): **$RATIO**.
EOF
