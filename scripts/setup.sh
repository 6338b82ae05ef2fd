#!/usr/bin/env bash
# Installs what the test suite needs, idempotently and quickly when already done:
# kcat, protoc, a JRE and Maven (Debian), a Python virtualenv with the Kafka clients,
# and Kafka's jars (its command-line tools, also the benchmarks' broker), kept outside
# the clone under $STRATA_CACHE, keyed by the requirements' hash and Kafka's version.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
mkdir -p "$CACHE"

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
# nft: the fault suite cuts links and drops packets between brokers with it.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# Kafka's own tools (kafka-topics, kafka-configs, ...) run in the client tests.
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

hash=$(sha256sum "$ROOT/tests/requirements.txt" | cut -c1-12)
VENV="$CACHE/venv-$hash"
if [ ! -x "$VENV/bin/pytest" ]; then
  echo "setup: creating Python environment $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$ROOT/tests/requirements.txt"
fi
echo "$VENV" > "$CACHE/current-venv"

KAFKA_VERSION=4.1.1
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
if [ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || [ ! -f "$KAFKA_LIBS/kafka-streams-$KAFKA_VERSION.jar" ] \
  || [ ! -f "$KAFKA_LIBS/connect-file-$KAFKA_VERSION.jar" ]; then
  echo "setup: fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  mvn -q -f "$ROOT/bench/pom.xml" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS"
fi
echo "$KAFKA_LIBS" > "$CACHE/current-kafka-libs"

# The e2e harness: Kubernetes control plane binaries, helm and SeaweedFS, built or
# installed once into $CACHE (the first run takes 10-20 minutes, later runs seconds).
bash "$ROOT/e2e/setup.sh"

# KEDA's Kafka scaler as a Go program for operator/tests/keda.rs, built once into
# $CACHE/keda-<version> (the first build takes 12 CPU-minutes, later runs none).
echo "setup: KEDA scaler program $(bash "$ROOT/tests/keda/build.sh")"
# Jaeger v2, the OTLP receiver of tests/clients/test_traces.py, built once into
# $CACHE/jaeger-<version> (the first build takes about 12 minutes here).
JAEGER="$(bash "$ROOT/tests/jaeger/build.sh")"
echo "$JAEGER" > "$CACHE/current-jaeger"
echo "setup: Jaeger $JAEGER"
echo "setup: ok (python env $VENV)"
