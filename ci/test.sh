#!/usr/bin/env bash
# The README's test command: unit, integration and doc tests, without
# features (the default build, as `--no-default-features`) and with every
# feature (`serde`: bus descriptions in TOML/JSON, serializable snapshots),
# and the NATS bridge's tests against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
# The bridge's tests (ringbus-nats) start real nats-server processes.
bash ci/nats-server.sh install
cargo test --workspace --no-default-features
cargo test -p ringbus --all-features
