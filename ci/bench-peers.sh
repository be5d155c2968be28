#!/usr/bin/env bash
# Builds the benchmark peers (crates of their own under peers/, so the
# core's MSRV and dependencies do not move) and runs the cross-process
# bench with them as extra rows. Arguments go to the bench, e.g.
# `bash ci/bench-peers.sh --rounds 5 --events 4000000`. Not a CI job: the
# peer takes a minute to build and the figures are read, not judged.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --manifest-path peers/iceoryx2/Cargo.toml
cargo bench --bench ipc --features ipc -- \
    --peer iceoryx2=peers/iceoryx2/target/release/ringbus-peer-iceoryx2 "$@"
