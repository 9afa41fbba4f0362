#!/usr/bin/env bash
# The chaos suite against a real local cluster (needs PostgreSQL on 127.0.0.1:5432):
#   scripts/chaos.sh                 # the short suite (what CI runs): one mixed run, 8 faults
#   scripts/chaos.sh long            # every fault kind on its own, then 40 mixed faults
#   scripts/chaos.sh kill --seed 7   # one scenario: kill, freeze, short-freeze, restart, drain,
#                                    # socket-drop, pg-restart, away-kill or mixed; CHAOS_SEED=7
#                                    # replays a run too
#   scripts/chaos.sh kill --idle-rooms 10000   # the same beside 10,000 silent rooms (a run at size)
# Reports (JSON) and node logs go to target/chaos/. Exits non-zero when an invariant breaks.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked --quiet
exec "${CARGO_TARGET_DIR:-target}/debug/chaos" "$@"
