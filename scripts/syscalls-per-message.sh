#!/usr/bin/env bash
# Counts the server's system calls and context switches per relayed message: runs
# `switchboard bench relay` for 12 s and, from its fourth second, `perf stat` on the node it
# started for 5 s, then divides by 5 s x the rate. Needs Linux perf (Debian: linux-perf).
#
#   scripts/syscalls-per-message.sh target/release/switchboard --rate 20000 [--ids]
set -euo pipefail
bin=$1
shift
rate=20000
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ ${args[$i]} == --rate ]] && rate=${args[$((i + 1))]}
done
out=$(mktemp)
"$bin" bench relay --seconds 12 "$@" >"$out" 2>&1 &
bench=$!
server=""
for _ in $(seq 1 100); do
  server=$(pgrep -P "$bench" | head -1 || true)
  [[ -n $server ]] && break
  sleep 0.1
done
[[ -n $server ]] || { echo "the bench started no node" >&2; exit 1; }
sleep 4
events=raw_syscalls:sys_enter,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait
events+=,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,context-switches
perf stat -x, -e "$events" -p "$server" -- sleep 5 2>&1 |
  awk -F, -v rate="$rate" '$1 ~ /^[0-9]+$/ { printf "%-32s %6.2f per message\n", $3, $1 / 5 / rate }'
wait "$bench"
grep '^| relay' "$out" || cat "$out"
rm -f "$out"
