#!/usr/bin/env bash
# Runs every example with its default arguments (each finishes on its own in
# seconds and checks its own result), and checks that a bad config file is
# refused with an error naming the field.
set -euo pipefail
cd "$(dirname "$0")/.."
for example in quickstart order_pipeline user_signup dashboard pinned_latency; do
    echo "--- example $example"
    cargo run --quiet --release --example "$example"
done
for file in examples/bus.toml examples/bus.json; do
    echo "--- example from_config $file"
    cargo run --quiet --release --features serde --example from_config -- "$file"
done
echo "--- example async_service"
cargo run --quiet --release --features async --example async_service
echo "--- example order_journal"
cargo run --quiet --release --features journal --example order_journal
echo "--- example ipc_orders (three processes; the matcher killed and restarted)"
cargo run --quiet --release --features ipc --example ipc_orders
echo "--- example order_services (ringbus-nats; a nats-server of its own)"
bash ci/nats-server.sh install
nats_dir=$(mktemp -d)
trap 'bash ci/nats-server.sh stop "$nats_dir"; rm -rf "$nats_dir"' EXIT
# The dev profile: the test job built the bridge's dependencies in it (a
# release build of async-nats and rustls costs CI a minute; the demo takes
# 3 s either way).
NATS_URL=$(bash ci/nats-server.sh start "$nats_dir") \
    cargo run --quiet -p ringbus-nats --example order_services -- demo --count 50000
echo "--- example from_config with a bad file"
if out=$(cargo run --quiet --release --features serde --example from_config -- examples/bad_bus.json 2>&1); then
    echo "from_config accepted examples/bad_bus.json"; exit 1
fi
echo "$out"
grep -q 'stages\[1\].after\[0\]: no earlier stage named `decod`' <<<"$out"
