#!/usr/bin/env bash
# Loom models of the production types (loom-tests/), release build with debug
# assertions, preemption bound 2. Extra RUSTFLAGS (e.g. a weakening cfg) may be
# passed in LOOM_EXTRA_RUSTFLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom -C debug-assertions ${LOOM_EXTRA_RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
cargo test -p loom-tests --release -- --nocapture --test-threads=1 "$@"
