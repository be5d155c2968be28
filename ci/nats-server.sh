#!/usr/bin/env bash
# nats-server for the bridge's tests, examples and benches: Debian's
# package (2.9.x, JetStream built in), installed if missing.
#   ci/nats-server.sh install     install it if it is not on PATH
#   ci/nats-server.sh start DIR   start one JetStream server on a free
#                                 loopback port, storage in DIR; prints its URL
#   ci/nats-server.sh stop DIR    stop the server started in DIR
# The tests start their own servers (single, 3-node cluster, with
# credentials); they only need the binary.
set -euo pipefail
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cmd=${1:-install}
case "$cmd" in
install)
    if ! command -v nats-server >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q nats-server >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q nats-server >/dev/null; }
    fi
    nats-server --version
    ;;
start)
    dir=${2:?a directory for the storage of the server}
    mkdir -p "$dir"
    port=$(free_port)
    nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/pid"
    # Ready when it says so and still runs (a listener alone could be
    # another process that took the port first).
    for _ in $(seq 100); do
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            break
        fi
        if grep -q "Server is ready" "$dir/server.log"; then
            echo "nats://127.0.0.1:$port"
            exit 0
        fi
        sleep 0.1
    done
    echo "nats-server did not start; its log:" >&2
    cat "$dir/server.log" >&2
    exit 1
    ;;
stop)
    dir=${2:?the directory given to start}
    if [ -f "$dir/pid" ]; then
        kill "$(cat "$dir/pid")" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    ;;
*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
