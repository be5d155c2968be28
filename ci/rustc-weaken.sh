#!/usr/bin/env bash
# A RUSTC_WRAPPER for ci/loom-weakened.sh: adds the weakening cfg named by
# RINGBUS_WEAKEN to the ringbus crate only, so every knob rebuilds ringbus
# and what depends on it, not every dependency (RUSTFLAGS would rebuild
# them all for each knob). Cargo does not see the extra flag, so the script
# touches src/lib.rs between knobs to make it rebuild ringbus.
rustc="$1"
shift
for arg in "$@"; do
    if [ "$arg" = "ringbus" ] && [ "${prev:-}" = "--crate-name" ] && [ -n "${RINGBUS_WEAKEN:-}" ]; then
        exec "$rustc" "$@" --cfg "ringbus_weaken=\"$RINGBUS_WEAKEN\""
    fi
    prev="$arg"
done
exec "$rustc" "$@"
