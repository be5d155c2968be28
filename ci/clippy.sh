#!/usr/bin/env bash
# Lints: the library, tests, examples and benches, and the loom build of the
# library and its models (RUSTFLAGS="--cfg loom").
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add clippy >/dev/null 2>&1 || true
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo clippy -p ringbus --no-default-features -- -D warnings
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo clippy --workspace --exclude ringbus-nats --all-targets -- -D warnings
