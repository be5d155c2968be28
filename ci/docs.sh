#!/usr/bin/env bash
# Documentation builds without warnings (broken links, missing docs).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps
