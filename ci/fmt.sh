#!/usr/bin/env bash
# Formatting is checked, not fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add rustfmt >/dev/null 2>&1 || true
cargo fmt --all --check
