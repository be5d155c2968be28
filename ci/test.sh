#!/usr/bin/env bash
# The README's test command: unit, integration and doc tests, without
# features (the default build, as `--no-default-features`) and with every
# feature (`serde`: bus descriptions in TOML/JSON, serializable snapshots).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --no-default-features
cargo test -p ringbus --all-features
