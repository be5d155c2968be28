#!/usr/bin/env bash
# Compiles every bench and runs each at a tiny size: a smoke test that the
# benchmarks build, run and check their results. Timings are not judged
# here. One build with every feature serves all of them (a bench build is
# LTO'd, and a build per feature set cost a minute more).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --all-features --no-run
cargo bench --all-features --bench journal -- --rounds 1 --events 20000
cargo bench --all-features --bench batch_handler -- --rounds 1 --events 65536
cargo bench --all-features --bench async_compare -- --rounds 1 --events 20000
cargo bench --all-features --bench ipc -- --rounds 1 --events 20000 --latency-events 500
cargo bench --all-features --bench compare -- --quick --out target/compare/ci-smoke
# The instruction counts need valgrind; the smoke run only runs the workloads.
cargo bench --all-features --bench instructions -- --smoke
bash ci/nats-server.sh install
# The dev profile shares its build with ci/test.sh and ci/examples.sh (a
# smoke run: its figures are not judged).
cargo bench -p ringbus-nats --profile dev --bench bridge -- --rounds 1 --events 5000 --latency-events 200
test -s target/compare/ci-smoke/report.json
test -s target/compare/ci-smoke/throughput.svg
test -s target/compare/ci-smoke/latency.svg
