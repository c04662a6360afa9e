#!/usr/bin/env bash
# Smoke test of the load generator against a fresh release engine (issue 4): a few
# seconds of modest signed load, failing unless every request succeeded. Not a benchmark.
#
#   bash loadtest/smoke.sh
#
# The engine runs on 127.0.0.1 only, on ports the OS chooses (PORT=0 ...: read back from
# its `listening` log lines), SHARDS=2, DURABILITY=fsync, default fairness settings but
# for the rate-of-gain and cadence detectors (GAIN_RATE_MAX, CADENCE_FRACTION,
# CADENCE_FLOOR_SEC: their defaults judge human players, and each of the generator's 500
# players sends ~3.6 events a second, a boss kill every ~2 s), in a fresh temporary
# directory that is its DATA_DIR. After /readyz (at most 30 s), `loadtest`
# runs 3 s at 2,000 requests/s over 500 players (10 % leaderboard reads, idempotency
# keys), then 1 s of batches of 50. It fails (exit 1) if the engine does not become
# ready, the generator exits non-zero, no event was accepted, any request got a non-2xx
# answer or none (timeout, broken connection, unsent), an event of a batch was refused,
# or the engine does not stop cleanly on SIGTERM. The engine is stopped and its
# directory deleted on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool not found" >&2; exit 1; }
done

# The binaries, built with the features `cargo bench --workspace` resolves (dev-dependencies
# included): right after CI's `cargo bench --workspace --no-run` this only links them
# (~4 s), where `-p liveops-net -p liveops-loadtest` resolves other features and
# recompiles 24 crates (~1 min on 2 cores).
cargo build --release -q --workspace --bins --benches
bin="$(cargo metadata -q --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"

secret=smoke-test-hmac-secret-0123456789abcdef
work=$(mktemp -d "${TMPDIR:-/tmp}/liveops-smoke.XXXXXX")
engine_pid=

# shellcheck source=loadtest/engine.sh
source loadtest/engine.sh

fail() {
  echo "smoke: FAILED: $1" >&2
  if [ -s "$work/engine.log" ]; then
    echo "--- engine log (last 40 lines)" >&2
    tail -n 40 "$work/engine.log" >&2
  fi
  exit 1
}

# exec: $! must be the engine itself, so it is the engine that gets stopped. env -i: only
# these settings, whatever the caller's environment holds (and no .env: cwd is $work).
(cd "$work" && exec env -i PATH="$PATH" ENV=dev RUST_LOG=info BIND_ADDR=127.0.0.1 \
  PORT=0 FAIRNESS_PORT=0 LEADERBOARD_PORT=0 PROGRESSION_PORT=0 SHARDS=2 \
  DATA_DIR="$work/data" DURABILITY=fsync HMAC_SECRET="$secret" RECEIPT_SECRET="$secret" \
  GAIN_RATE_MAX=1000000 CADENCE_FRACTION=0 CADENCE_FLOOR_SEC=0 \
  "$bin/liveops" </dev/null >"$work/engine.out" 2>"$work/engine.log") &
engine_pid=$!

# port SERVICE: the port the engine logged for SERVICE, or nothing yet.
gateway=
leaderboard=
ready=
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  alive "$engine_pid" || fail "the engine exited during start-up"
  [ -n "$gateway" ] || gateway=$(port gateway)
  [ -n "$leaderboard" ] || leaderboard=$(port leaderboard)
  if [ -n "$gateway" ] && [ -n "$leaderboard" ] &&
    curl -sf --max-time 1 "http://127.0.0.1:$gateway/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || fail "the engine was not ready within 30 s (gateway port: ${gateway:-not logged})"

# loadtest NAME ARGS...: one run against the engine, its JSON in $work/NAME.json.
loadtest() {
  local name=$1
  shift
  if ! HMAC_SECRET=$secret timeout -k 5 60 "$bin/loadtest" --host 127.0.0.1 \
    --port "$gateway" --read-port "$leaderboard" --players 500 --timeout 5 \
    --json "$work/$name.json" "$@" >"$work/$name.txt" 2>&1; then
    echo "--- loadtest $name" >&2
    cat "$work/$name.txt" >&2
    fail "loadtest ($name) exited non-zero"
  fi
}
loadtest single --rate 2000 --duration 3 --warmup 0.5 --connections 16 \
  --read-ratio 0.1 --read-connections 4 --idempotency-keys
loadtest batch --rate 20 --duration 1 --batch 50 --connections 4

alive "$engine_pid" || fail "the engine died during the load"
stop_status=0
stop_engine || stop_status=$?
[ "$stop_status" = 0 ] || fail "the engine exited with status $stop_status on SIGTERM (expected 0)"

# Every check on the generator's JSON reports (fields: loadtest/src/lib.rs, "The JSON
# report"); one summary line on success.
python3 - "$work" <<'PY' || fail "the load was not served cleanly"
import json, sys

work = sys.argv[1]
problems, parts = [], []
for name in ("single", "batch"):
    r = json.load(open(f"{work}/{name}.json"))["result"]
    if r["events_accepted"] == 0:
        problems.append(f"{name}: no event accepted")
    if r["errors"] > 0:
        problems.append(f"{name}: {r['errors']} of {r['scheduled']} requests failed, status {r['status']}")
    if r["events_accepted"] != r["events_sent"]:
        problems.append(f"{name}: {r['events_sent'] - r['events_accepted']} of {r['events_sent']} events refused")
    if r["generator"]["connect_errors"] > 0:
        problems.append(f"{name}: {r['generator']['connect_errors']} connect errors")
    p99 = ", ".join(f"{c} p99 {v['latency_ms']['p99']:.2f} ms" for c, v in r["classes"].items())
    behind = " (generator fell behind)" if r["generator"]["fell_behind"] else ""
    parts.append(f"{name}: {r['throughput_rps']:.0f} req/s, {r['events_per_s']:.0f} events/s accepted, {p99}{behind}")
if problems:
    for name in ("single", "batch"):
        sys.stderr.write(f"--- loadtest {name}\n" + open(f"{work}/{name}.txt").read())
    for p in problems:
        print(f"smoke: {p}", file=sys.stderr)
    sys.exit(1)
print("smoke: OK -- " + "; ".join(parts))
PY
