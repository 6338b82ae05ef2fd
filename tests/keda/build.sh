#!/usr/bin/env bash
# Builds strata-keda-lag (KEDA's Kafka scaler driven against a broker, see
# main.go) into $STRATA_CACHE/keda-<KEDA version>/, outside the clone, and
# prints its path. Go's module and build caches live under $STRATA_CACHE/go as
# for e2e/setup.sh. The first build compiles KEDA's every scaler (one Go
# package) and its cloud SDKs: 12 CPU-minutes (36 min on this 2-core machine
# while other builds ran); later runs return at once.
set -euo pipefail
cd "$(dirname "$0")"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
version="$(awk '$1 == "github.com/kedacore/keda/v2" { print $2; exit }' go.mod)"
[ -n "$version" ] || { echo "build.sh: no kedacore/keda/v2 requirement in go.mod" >&2; exit 1; }
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOPATH="$CACHE/go/path"
export GOFLAGS=-mod=readonly CGO_ENABLED=0
# The Go e2e/setup.sh finds or installs.
GO=""
for g in "$(command -v go || true)" /usr/local/go/bin/go "$CACHE/go-venv/bin/go"; do
  if [ -n "$g" ] && [ -x "$g" ]; then GO="$g"; break; fi
done
[ -n "$GO" ] || { echo "build.sh: no Go (run bash e2e/setup.sh)" >&2; exit 1; }
out="$CACHE/keda-$version"
# Up to date: newer than every input (go's own staleness check over KEDA's
# thousands of packages takes a minute on a busy machine).
if [ -x "$out/strata-keda-lag" ] && [ -z "$(find main.go go.mod go.sum build.sh -newer "$out/strata-keda-lag")" ]; then
  echo "$out/strata-keda-lag"
  exit 0
fi
mkdir -p "$out"
"$GO" build -trimpath -o "$out/strata-keda-lag.tmp" . >&2
mv "$out/strata-keda-lag.tmp" "$out/strata-keda-lag"
echo "$out/strata-keda-lag"
