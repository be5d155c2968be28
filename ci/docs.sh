#!/usr/bin/env bash
# Documentation builds without warnings (broken links, missing docs), as
# docs.rs builds it (every feature) and as a default build does.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --all-features
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps -p ringbus-nats
