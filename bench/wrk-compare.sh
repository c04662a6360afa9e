#!/usr/bin/env bash
# Engine vs. baseline under wrk, side by side in one session, single signed events.
#
#   bench/wrk-compare.sh [seconds=10] [connections=64]
#
# Both servers run SHARDS=2 on 127.0.0.1 with the same HMAC secret; wrk replays 1000
# bodies for 1000 players, each pre-signed (wrk's Lua has no HMAC). The engine runs
# with RATE_LIMIT_MAX high so the figure is ingestion, not the fairness guard's 429s.
# Prints wrk's report for each (a non-2xx count appears if any request was refused)
# and the engine/baseline ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-10}
connections=${2:-64}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p liveops-net -p liveops-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export HMAC_SECRET=wrk-compare-secret-0123456789abcdef0123
python3 - "$work/events.lua" <<'PY'
import hashlib, hmac, json, os, sys, time
secret = os.environ["HMAC_SECRET"].encode()
bodies = []
for i in range(1000):
    body = json.dumps({"type": "progression", "playerId": f"wrk_player_{i:04d}",
                       "ts": int(time.time()), "payload": {"deltaXp": 10 + i % 7}},
                      separators=(",", ":"))
    sig = "sha256=" + hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    bodies.append((body, sig))
with open(sys.argv[1], "w") as f:
    f.write("local reqs = {}\n")
    for body, sig in bodies:
        f.write('reqs[#reqs+1] = wrk.format("POST", "/events", {["Content-Type"]="application/json", ["X-Signature"]="%s"}, %s)\n' % (sig, json.dumps(body)))
    f.write("local n = 0\nrequest = function() n = n + 1; return reqs[(n % #reqs) + 1] end\n")
PY
run() { # name port
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/events.lua" "http://127.0.0.1:$2" > "$work/$1.txt"
  awk '/Requests\/sec/ {print $2}' "$work/$1.txt"
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

SHARDS=2 PORT=18090 BASELINE_SECONDS=$((seconds * 3 + 30)) target/release/baseline 2>/dev/null &
baseline_pid=$!
wait_port 18090
kill -0 "$baseline_pid" || { echo "the baseline did not start (port taken?)" >&2; exit 1; }
baseline=$(run baseline 18090)
kill -TERM "$baseline_pid"; wait "$baseline_pid" 2>/dev/null || true

# exec: $! must be the engine itself, so it is the engine that gets stopped.
(cd "$work" && SHARDS=2 PORT=18080 FAIRNESS_PORT=18081 LEADERBOARD_PORT=18082 PROGRESSION_PORT=18083 \
  BIND_ADDR=127.0.0.1 RATE_LIMIT_MAX=1000000 GAIN_RATE_MAX=1000000 CADENCE_FRACTION=0 CADENCE_FLOOR_SEC=0 RECEIPT_SECRET=$HMAC_SECRET \
  exec "$root/target/release/liveops" >/dev/null 2>&1) &
engine_pid=$!
wait_port 18080
kill -0 "$engine_pid" || { echo "the engine did not start (port taken?)" >&2; exit 1; }
engine=$(run engine 18080)
kill -TERM "$engine_pid"; wait "$engine_pid" 2>/dev/null || true

echo "--- baseline"; cat "$work/baseline.txt"
echo "--- engine"; cat "$work/engine.txt"
python3 -c "print(f'baseline {float(\"$baseline\"):,.0f} req/s, engine {float(\"$engine\"):,.0f} req/s, ratio {float(\"$engine\")/float(\"$baseline\"):.2f}')"
