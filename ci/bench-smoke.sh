#!/usr/bin/env bash
# Compiles every bench and runs the comparison at a tiny size: a smoke test
# that the benchmarks build, run and check their results. Timings are not
# judged here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --no-run
cargo bench --features journal --bench journal -- --rounds 1 --events 20000
cargo bench --bench batch_handler -- --rounds 1 --events 65536
cargo bench --features async --bench async_compare -- --rounds 1 --events 20000
cargo bench --bench compare -- --quick --out target/compare/ci-smoke
test -s target/compare/ci-smoke/report.json
test -s target/compare/ci-smoke/throughput.svg
test -s target/compare/ci-smoke/latency.svg
