#!/usr/bin/env bash
# The library builds with the Rust version Cargo.toml declares
# (`rust-version`), with and without its optional features. Dev-dependencies
# (benches, tests) may need a newer compiler; users of the library do not.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$msrv" --profile minimal
fi
export CARGO_TARGET_DIR=target/msrv
cargo +"$msrv" check -p ringbus --no-default-features
cargo +"$msrv" check -p ringbus --all-features
