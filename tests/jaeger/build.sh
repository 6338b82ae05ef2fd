#!/usr/bin/env bash
# Builds Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger, the version go.mod
# pins as a tool) into $STRATA_CACHE/jaeger-<version>/, outside the clone, and
# prints its path. The trace tests (tests/clients/test_traces.py) run it as the
# OTLP receiver and query its API. Go's module and build caches live under
# $STRATA_CACHE/go as for e2e/setup.sh. The first build takes about 12 minutes on
# this 2-core machine while other builds run; later runs return at once.
set -euo pipefail
cd "$(dirname "$0")"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
version="$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2; exit }' go.mod)"
[ -n "$version" ] || { echo "build.sh: no jaegertracing/jaeger requirement in go.mod" >&2; exit 1; }
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOPATH="$CACHE/go/path"
export GOFLAGS=-mod=readonly CGO_ENABLED=0 GOTOOLCHAIN=local
GO=""
for g in "$(command -v go || true)" /usr/local/go/bin/go "$CACHE/go-venv/bin/go"; do
  if [ -n "$g" ] && [ -x "$g" ]; then GO="$g"; break; fi
done
[ -n "$GO" ] || { echo "build.sh: no Go (run bash e2e/setup.sh)" >&2; exit 1; }
out="$CACHE/jaeger-$version"
if [ -x "$out/jaeger" ] && [ -z "$(find go.mod go.sum build.sh -newer "$out/jaeger")" ]; then
  echo "$out/jaeger"
  exit 0
fi
mkdir -p "$out"
"$GO" build -o "$out/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
mv "$out/jaeger.tmp" "$out/jaeger"
echo "$out/jaeger"
