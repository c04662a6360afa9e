#!/usr/bin/env bash
# The engine with BUS_KIND=nats against BUS_KIND=inmem, alternated in one session
# (issue 12: a bus sink must keep >= 85 % of inmem's throughput):
#
#   bash bench/bus-ab.sh [rounds=2]
#
# Per round and scenario (20,000 single events/s; batches of 500 at 400/s), a fresh
# engine with no bus and a fresh engine and a fresh nats-server -js (its own store
# directory) with BUS_KIND=nats, their order alternating by round; SHARDS=2,
# DURABILITY=fsync, 100,000 players, 10 s after 2 s of warm-up, 127.0.0.1:18080-18083 and
# 14222. Prints the load generator's lines and, for the bus runs, the sink's lag and
# forwarded records at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
for tool in curl nats-server; do
  command -v "$tool" >/dev/null || { echo "bus-ab: $tool not found" >&2; exit 1; }
done
cargo build --release -q --workspace --bins --benches
bin=target/release
secret=bus-ab-secret-0123456789abcdef0123456789
root=$(pwd)
# A run that fails (set -e) must not leave its engine or nats-server behind.
engine=
nats=
trap '[ -n "$engine" ] && kill "$engine" 2>/dev/null; [ -n "$nats" ] && kill "$nats" 2>/dev/null; true' EXIT
run() {
  local label=$1; shift
  local kind=$1; shift
  local dir; dir=$(mktemp -d)
  nats-server -a 127.0.0.1 -p 14222 -js -sd "$dir/nats" -l "$dir/nats.log" >/dev/null 2>&1 &
  nats=$!
  sleep 0.5
  (cd "$dir" && exec env SHARDS=2 BIND_ADDR=127.0.0.1 PORT=18080 FAIRNESS_PORT=18081 \
     LEADERBOARD_PORT=18082 PROGRESSION_PORT=18083 HMAC_SECRET=$secret RECEIPT_SECRET=$secret \
     RATE_LIMIT_MAX=1000000 GAIN_RATE_MAX=1000000 CADENCE_FRACTION=0 CADENCE_FLOOR_SEC=0 BUS_KIND=$kind NATS_URL=nats://127.0.0.1:14222 BUS_STREAM=LIVEOPS \
     "$root/$bin/liveops" >"$dir/engine.log" 2>&1) &
  engine=$!
  for _ in $(seq 200); do curl -sf http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break; sleep 0.05; done
  echo "== $label BUS_KIND=$kind: $*"
  HMAC_SECRET=$secret $bin/loadtest --port 18080 --read-port 18082 --duration 10 --warmup 2 \
    --players 100000 "$@" | grep -E "^write |accepted events/s"
  curl -s http://127.0.0.1:18080/metrics | grep -E '^liveops_mirror_lag_records|^liveops_mirror_records_total' | tr '\n' ' ' || true
  echo
  kill -TERM "$engine"; wait "$engine" 2>/dev/null || true
  kill "$nats"; wait "$nats" 2>/dev/null || true
  engine=
  nats=
  rm -rf "$dir"
}
# The run that comes second finds the disk still busy with the first one's fsynced writes
# (bench/ab.sh saw up to 1.4x in single events): inmem goes first in odd rounds, nats in
# even ones, so an even number of rounds gives each kind each place.
for round in $(seq "$rounds"); do
  kinds=(inmem nats)
  [ $((round % 2)) = 1 ] || kinds=(nats inmem)
  for scenario in "--rate 20000" "--rate 400 --batch 500 --connections 16"; do
    for kind in "${kinds[@]}"; do
      # shellcheck disable=SC2086 # each scenario is a list of arguments
      run "round $round" "$kind" $scenario
    done
  done
done
