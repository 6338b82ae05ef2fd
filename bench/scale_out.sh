#!/usr/bin/env bash
# Cheap scale-out, measured (issue #18 item 4): a 3-broker tiered Cluster on the local
# control plane (`strata-e2e up`: real etcd, kube-apiserver, kube-controller-manager,
# the process kubelet and SeaweedFS), the operator installed with the Helm chart, a
# topic filled with history that moves to the tier, then 3 -> 4 brokers and back
# under a fixed-rate acks=all producer (bench/scale_out.py does the measuring).
# Usage: bench/scale_out.sh [history MiB, default 2048] [reassignmentThrottle, default 8Mi]
# Prints a Markdown block for bench/RESULTS.md; progress goes to stderr. Takes
# 10-20 minutes (the history and its upload to the tier are most of it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HISTORY_MIB="${1:-2048}"
THROTTLE="${2:-8Mi}"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target-bench}"
cd "$ROOT"
bash scripts/setup.sh >&2
echo "building release binaries into $CARGO_TARGET_DIR" >&2
cargo build --release -q -p strata-broker -p strata-operator -p strata-e2e >&2
BIN="$CARGO_TARGET_DIR/release"
VENV="$(cat "$CACHE/current-venv")"
export PATH="$PATH:$CACHE/k8s-1.34.4/bin"
WORK="$(mktemp -d /tmp/strata-scale.XXXXXX)"
"$BIN/strata-e2e" up --dir "$WORK/env" --bucket strata-bench \
  --image "ghcr.io/strata-dev/strata-broker=$BIN/strata-broker" \
  --image "ghcr.io/strata-dev/strata-operator=$BIN/strata-operator" >"$WORK/up.log" 2>&1 &
UP=$!
cleanup() { kill "$UP" 2>/dev/null || true; wait "$UP" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for _ in $(seq 1 180); do
  [ -f "$WORK/env/env.sh" ] && break
  kill -0 "$UP" 2>/dev/null || { cat "$WORK/up.log" >&2; exit 1; }
  sleep 1
done
[ -f "$WORK/env/env.sh" ] || { echo "strata-e2e up did not come up in 180 s" >&2; cat "$WORK/up.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$WORK/env/env.sh"
helm install strata helm/strata --namespace strata-system --create-namespace --wait >&2
THROTTLE_BYTES="$("$VENV/bin/python" -c '
import sys
q = sys.argv[1]
units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
for u, m in units.items():
    if q.endswith(u):
        print(int(q[: -len(u)]) * m); break
else:
    print(int(q))' "$THROTTLE")"
sed -e "s#http://seaweedfs.storage.svc:8333#$AWS_ENDPOINT_URL#" \
    -e "s#AWS_ACCESS_KEY_ID: strata#AWS_ACCESS_KEY_ID: $AWS_ACCESS_KEY_ID#" \
    -e "s#AWS_SECRET_ACCESS_KEY: change-me#AWS_SECRET_ACCESS_KEY: $AWS_SECRET_ACCESS_KEY#" \
    -e "s#bucket: strata-demo#bucket: $STRATA_S3_BUCKET#" \
    -e "s#  replicas: 3#  replicas: 3\n  reassignmentThrottle: \"$THROTTLE\"#" \
    -e "s#    log_retention_ms: \"604800000\"#    tier_upload_interval_ms: \"2000\"\n    retention_check_interval_ms: \"2000\"\n    log_retention_ms: \"-1\"#" \
    manifests/cluster.yaml | kubectl apply -f - >&2
for _ in $(seq 1 180); do
  st="$(kubectl get strata demo -o jsonpath='{.status.phase} {.status.readyReplicas}' 2>/dev/null || true)"
  [ "$st" = "Running 3" ] && break
  sleep 1
done
[ "$st" = "Running 3" ] || { echo "Cluster demo not Running with 3 brokers: $st" >&2; exit 1; }
echo "## $(date -u '+%Y-%m-%d %H:%M') UTC — scale-out and drain of a tiered cluster (\`bench/scale_out.sh $HISTORY_MIB $THROTTLE\`, commit $(git rev-parse --short HEAD))"
echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; load before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
"$VENV/bin/python" bench/scale_out.py "$HISTORY_MIB" "$THROTTLE_BYTES" "$BIN/strata"
echo
echo "Load after: $(cut -d' ' -f1-3 /proc/loadavg)."
