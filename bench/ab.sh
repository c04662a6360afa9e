#!/usr/bin/env bash
# The engine at an older commit against the working tree's, alternated in one session:
# the machine is shared and drifts, so a change is judged against its predecessor run
# minutes apart, never against figures from another day.
#
#   bash bench/ab.sh REV [rounds=2]
#
# Builds REV in a git worktree kept at target/ab-old/src (target dir target/ab-old), then
# per round runs each scenario on a fresh old engine and a fresh new one (SHARDS=2,
# DURABILITY=fsync, 100,000 players, 10 s after 2 s warm-up, 127.0.0.1:18080-18083), old
# first in odd rounds and new first in even ones, and prints the load generator's latency
# lines.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rev=${1:?usage: bench/ab.sh REV [rounds]}
rounds=${2:-2}
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 1; }
# The engine is built alone, as REV's is below. Built together with the load generator,
# cargo unifies their dependencies' features (num-traits' libm, rand_chacha's default) and
# links a different engine binary, so the A/B would compare two builds as well as two
# commits (BENCHMARKS.md, 2026-12-02).
cargo build --release -q -p liveops-net
cargo build --release -q -p liveops-loadtest
# Kept at a fixed path between runs: a second run for the same REV finds its checkout and
# its build up to date (cargo judges local sources by path and modification time).
worktree="$root/target/ab-old/src"
if [ "$(git -C "$worktree" rev-parse HEAD 2>/dev/null)" != "$(git rev-parse "$rev^{commit}")" ]; then
  git worktree remove --force "$worktree" 2>/dev/null || rm -rf "$worktree"
  git worktree prune
  git worktree add -q --detach "$worktree" "$rev"
fi
(cd "$worktree" && CARGO_TARGET_DIR="$root/target/ab-old" cargo build --release -q -p liveops-net)
old="$root/target/ab-old/release/liveops"
new="$root/target/release/liveops"
export HMAC_SECRET=ab-bench-secret-0123456789abcdef0123456789
engine_pid=
trap '[ -n "$engine_pid" ] && kill "$engine_pid" 2>/dev/null || true' EXIT

# run LABEL BINARY LOADTEST_ARGS...: one fresh engine, one load run.
run() {
  local label=$1 binary=$2; shift 2
  local dir; dir=$(mktemp -d)
  (cd "$dir" && exec env SHARDS=2 BIND_ADDR=127.0.0.1 PORT=18080 FAIRNESS_PORT=18081 \
     LEADERBOARD_PORT=18082 PROGRESSION_PORT=18083 RECEIPT_SECRET="$HMAC_SECRET" \
     RATE_LIMIT_MAX=1000000 GAIN_RATE_MAX=1000000 CADENCE_FRACTION=0 CADENCE_FLOOR_SEC=0 "$binary" >"$dir/engine.log" 2>&1) &
  engine_pid=$!
  local ready=0
  for _ in $(seq 200); do
    curl -sf http://127.0.0.1:18080/readyz >/dev/null 2>&1 && { ready=1; break; }
    sleep 0.05
  done
  [ "$ready" = 1 ] || { echo "$label engine did not become ready" >&2; cat "$dir/engine.log" >&2; exit 1; }
  echo "== $label: $*"
  "$root/target/release/loadtest" --port 18080 --read-port 18082 --duration 10 --warmup 2 \
    --players 100000 "$@" | grep -E "^(write|read_top|read_rank) |accepted events/s"
  kill -TERM "$engine_pid"
  wait "$engine_pid" 2>/dev/null || true
  engine_pid=
  rm -rf "$dir"
}

# The engine that runs second finds the disk still busy with the first one's fsynced
# writes, and loses for it (on this machine by up to 1.4x in single events): so the order
# alternates by round, and an even number of rounds gives each engine each place.
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    order=("old $rev" "new"); binaries=("$old" "$new")
  else
    order=("new" "old $rev"); binaries=("$new" "$old")
  fi
  echo "#### round $round: ${order[0]} first"
  for scenario in "--rate 20000" "--rate 11000 --read-ratio 0.0909" \
                  "--rate 400 --batch 500 --connections 16"; do
    for i in 0 1; do
      # shellcheck disable=SC2086 # each scenario is a list of arguments
      run "${order[$i]}" "${binaries[$i]}" $scenario
    done
  done
done
