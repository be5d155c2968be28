#!/usr/bin/env bash
# The README's test command: unit and doc tests without features (the
# default build, as `--no-default-features`), and unit, integration and doc
# tests with every feature (`serde`: bus descriptions in TOML/JSON, serializable snapshots),
# and the NATS bridge's tests against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
# The bridge's tests (ringbus-nats) start real nats-server processes.
bash ci/nats-server.sh install
# The default build (no features): every test target compiles, and the
# library's unit and doc tests run; its integration tests run once, below,
# with every feature (they behave the same: a feature only adds tests).
cargo test --workspace --no-default-features --no-run
cargo test -p ringbus --no-default-features --lib
cargo test -p ringbus --no-default-features --doc
cargo test -p ringbus-nats
cargo test -p ringbus --all-features
