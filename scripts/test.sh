#!/usr/bin/env bash
# The whole test suite: formatting and lints, Rust unit and integration tests
# (including the e2e scenarios on a local control plane), and the real-client tests
# (confluent-kafka, kafka-python, kcat) against the built broker binary.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"

bash scripts/setup.sh
VENV="$(cat "$CACHE/current-venv")"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace
echo "== client tests (pytest)"
STRATA_BROKER_BIN="$TARGET/debug/strata-broker" "$VENV/bin/pytest" -p no:warnings -q tests/clients
