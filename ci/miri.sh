#!/usr/bin/env bash
# Miri over the library's unit and integration tests (stress sizes shrink
# under cfg(miri); tests Miri cannot run, pinning and procfs, say why beside
# their skip). Checks the unsafe code for undefined behaviour and data races.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/nightly.sh
cargo +nightly miri setup
cargo +nightly miri test -p ringbus "$@"
