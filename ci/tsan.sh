#!/usr/bin/env bash
# ThreadSanitizer over the integration (stress) tests, with std rebuilt
# instrumented so its atomics and locks are seen too.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/nightly.sh
# `ringbus_tsan`: the stress tests run a quarter of their volume (tests/
# common/mod.rs `scaled`); TSan watches interleavings, not volume.
export RUSTFLAGS="-Zsanitizer=thread --cfg ringbus_tsan"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export CARGO_TARGET_DIR=target/tsan
# The test harness's own threads are fine; report only real races.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
# The randomized lifecycle test runs fewer cases under TSan's ~10x slowdown.
export RINGBUS_LIFECYCLE_CASES="${RINGBUS_LIFECYCLE_CASES:-150}"
cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu -p ringbus --tests "$@"
# The shared-memory bus in threads of one process (feature `ipc`): the
# stages' tests and the lifecycle tester's IPC cases (one seed in six; the
# kill tests of tests/ipc.rs use other processes, which TSan does not follow).
cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu -p ringbus --features ipc \
    --test ipc_stage
RINGBUS_LIFECYCLE_IPC_ONLY=1 RINGBUS_LIFECYCLE_CASES=900 \
    cargo +nightly test -Zbuild-std --target x86_64-unknown-linux-gnu -p ringbus --features ipc \
    --test lifecycle
