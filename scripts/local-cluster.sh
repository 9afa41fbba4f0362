#!/usr/bin/env bash
# Starts a three-node Switchboard cluster on this machine against one PostgreSQL database:
#   n1 http 127.0.0.1:8081 cluster 127.0.0.1:7001
#   n2 http 127.0.0.1:8082 cluster 127.0.0.1:7002 (seed n1)
#   n3 http 127.0.0.1:8083 cluster 127.0.0.1:7003 (seed n1)
# The links between them are mutual TLS against a cluster CA made once into data/cluster-tls
# (`switchboard cluster-certs`), as outside dev mode; the defaults for leases and heartbeats.
# Usage: scripts/local-cluster.sh [postgres-url]   (Ctrl-C stops all three)
set -euo pipefail
cd "$(dirname "$0")/.."
db="${1:-${SWITCHBOARD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
# One cluster, one trust: every node signs and checks tokens with the same secret.
export SWITCHBOARD_AUTH_SECRET="${SWITCHBOARD_AUTH_SECRET:-local-cluster-secret-$(whoami)-0123456789}"
cargo build --release --quiet
bin=target/release/switchboard
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/release/switchboard"
certs=data/cluster-tls
[ -f "$certs/ca.pem" ] || "$bin" cluster-certs --nodes n1,n2,n3 --out "$certs" >/dev/null
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for i in 1 2 3; do
  seeds=(); [ "$i" != 1 ] && seeds=(--seeds 127.0.0.1:7001)
  "$bin" serve --node-id "n$i" --http-addr "127.0.0.1:808$i" --cluster-addr "127.0.0.1:700$i" \
    --data-dir "data/n$i" --database-url "$db" "${seeds[@]}" \
    --cluster-tls-cert "$certs/n$i.pem" --cluster-tls-key "$certs/n$i-key.pem" --cluster-ca "$certs/ca.pem" &
  pids+=($!)
  [ "$i" = 1 ] && sleep 1
done
echo "cluster up: curl -s localhost:8081/api/cluster"
wait
