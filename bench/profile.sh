#!/usr/bin/env bash
# Where a request's CPU goes: the engine and the load generator at one open-loop rate.
#
#   bash bench/profile.sh RATE [seconds=8] [extra loadtest args...]
#
# Starts a fresh release engine (SHARDS=2, DURABILITY=fsync, 127.0.0.1:18080-18083),
# runs `loadtest --rate RATE` against it (100,000 players unless the extra args say
# otherwise), and prints:
#   - the engine's and the generator's CPU per request (user + system, from /proc and
#     bash's `time`), which is what decides how much rate two shared cores can carry;
#   - with `perf` installed, a `perf record -e cpu-clock -g` of the engine over the
#     middle of the run, every sample put in one category by its call stack (fdatasync,
#     TCP send, the skip lists, ...) per thread kind (shard, flush), in microseconds of
#     CPU per request.
# Raw files stay in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rate=${1:?usage: bench/profile.sh RATE [seconds] [loadtest args...]}
seconds=${2:-8}
shift $(($# < 2 ? $# : 2))
command -v curl >/dev/null || { echo "curl not found: apt-get install curl" >&2; exit 1; }
cargo build --release -q -p liveops-net -p liveops-loadtest
out=$(mktemp -d /tmp/liveops-profile.XXXXXX)
export HMAC_SECRET=profile-bench-secret-0123456789abcdef0123
(cd "$out" && exec env SHARDS=2 BIND_ADDR=127.0.0.1 PORT=18080 FAIRNESS_PORT=18081 \
   LEADERBOARD_PORT=18082 PROGRESSION_PORT=18083 RECEIPT_SECRET="$HMAC_SECRET" \
   RATE_LIMIT_MAX=1000000 GAIN_RATE_MAX=1000000 CADENCE_FRACTION=0 CADENCE_FLOOR_SEC=0 "$root/target/release/liveops" >"$out/engine.log" 2>&1) &
engine_pid=$!
trap 'kill "$engine_pid" 2>/dev/null || true' EXIT
for _ in $(seq 200); do
  curl -sf http://127.0.0.1:18080/readyz >/dev/null 2>&1 && break
  sleep 0.05
done
curl -sf http://127.0.0.1:18080/readyz >/dev/null || { echo "the engine did not become ready" >&2; exit 1; }

hz=$(getconf CLK_TCK)
engine_ticks() { awk '{print $14 + $15}' "/proc/$engine_pid/stat"; }
warmup=1
before=$(engine_ticks)
if command -v perf >/dev/null; then
  # Record the middle of the run: after the warm-up, before the drain.
  (sleep $((warmup + 1)); perf record -q -F 2000 -e cpu-clock -g -p "$engine_pid" -o "$out/perf.data" \
     -- sleep $((seconds > 3 ? seconds - 2 : 1)) >/dev/null 2>&1) &
  perf_pid=$!
fi
TIMEFORMAT='%U %S'
{ time "$root/target/release/loadtest" --port 18080 --read-port 18082 --rate "$rate" \
    --duration "$seconds" --warmup "$warmup" --players 100000 "$@" >"$out/loadtest.txt" 2>&1; } 2>"$out/loadtest.time"
after=$(engine_ticks)
[ -n "${perf_pid:-}" ] && wait "$perf_pid"
grep -E "^(requests|class|write|read_)" "$out/loadtest.txt"
requests=$(( rate * (seconds + warmup) ))
awk -v t0="$before" -v t1="$after" -v hz="$hz" -v n="$requests" -v g="$(cat "$out/loadtest.time")" 'BEGIN {
  split(g, gen, " ");
  printf "CPU per request: engine %.1f us, generator %.1f us (%d requests)\n",
    (t1 - t0) / hz * 1e6 / n, (gen[1] + gen[2]) * 1e6 / n, n }'
if [ -f "$out/perf.data" ]; then
  recorded_s=$((seconds > 3 ? seconds - 2 : 1))
  perf script -i "$out/perf.data" -F comm,ip,sym 2>/dev/null \
    | python3 bench/cpu_categories.py --per-request "$(( rate * recorded_s ))" --sample-us 500
fi
echo "raw files: $out"
