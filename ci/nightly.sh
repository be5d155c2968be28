#!/usr/bin/env bash
# Installs the nightly toolchain with the components the Miri and TSan jobs
# need, if a fresh machine lacks them. Sourced by ci/miri.sh and ci/tsan.sh.
set -euo pipefail
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
installed=$(rustup component list --toolchain nightly --installed)
for component in miri rust-src; do
    if ! grep -q "^$component" <<<"$installed"; then
        rustup component add --toolchain nightly "$component"
    fi
done
