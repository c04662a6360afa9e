#!/usr/bin/env bash
# The fairness guard measured on a simulated population (issue 11): builds the engine and
# `fairsim` (release), starts a fresh engine, plays the population against it and prints
# the report. An instrument: exit 0 whatever the figures, 1 when `--require` thresholds
# are unmet, 2 when the engine cannot be started or reached.
#
#   bash loadtest/fairsim.sh                          # default profile, seed 1, 30 s
#   bash loadtest/fairsim.sh --profile whales --seed 3 --duration 45 --json out.json
#   bash loadtest/fairsim.sh --smoke                  # CI: 4 s, 150 players, end to end
#
# Every argument but --smoke goes to `fairsim` (see `fairsim --help`, and
# `fairsim --print-params` for every knob). Engine knobs from the environment:
# RATE_LIMIT_MAX (default 50, also told to fairsim), BLOCK_SEC, ANOMALY_Z (engine
# defaults when unset), ENGINE_ENV (extra KEY=VALUE words for the engine, e.g.
# ENGINE_ENV="GAIN_RATE_MAX=5 LUCK_LLR_MAX=4": any fairness threshold of the README).
#
# The engine: 127.0.0.1 only, ports chosen by the OS (read back from its `listening`
# lines), SHARDS=2, DURABILITY=batch (the guard does not depend on fsync, and the run
# should not measure the disk), IDEMP_HOST_SHARE=100 (every simulated game server is
# this one host), its own temporary DATA_DIR; stopped and deleted on every exit.
# --smoke checks that the simulator runs end to end (events answered, players read,
# boards read), not the guard's quality.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "fairsim.sh: curl not found" >&2; exit 2; }

smoke=
args=()
for a in "$@"; do
  if [ "$a" = --smoke ]; then smoke=1; else args+=("$a"); fi
done

# The binaries, built with the features `cargo bench --workspace` resolves, as
# `loadtest/smoke.sh` does: right after CI's bench build this only links them.
cargo build --release -q --workspace --bins --benches
bin="$(cargo metadata -q --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"

secret=fairsim-harness-hmac-secret-0123456789abcdef
work=$(mktemp -d "${TMPDIR:-/tmp}/liveops-fairsim.XXXXXX")
engine_pid=
rate_limit=${RATE_LIMIT_MAX:-50}

# shellcheck source=loadtest/engine.sh
source loadtest/engine.sh

fail() {
  echo "fairsim.sh: FAILED: $1" >&2
  [ -s "$work/engine.log" ] && { echo "--- engine log (last 20 lines)" >&2; tail -n 20 "$work/engine.log" >&2; }
  exit 2
}

engine_env=(RATE_LIMIT_MAX="$rate_limit")
for key in BLOCK_SEC ANOMALY_Z; do
  [ -n "${!key:-}" ] && engine_env+=("$key=${!key}")
done
# shellcheck disable=SC2206 # ENGINE_ENV is a list of words on purpose.
[ -n "${ENGINE_ENV:-}" ] && engine_env+=(${ENGINE_ENV})

(cd "$work" && exec env -i PATH="$PATH" ENV=dev RUST_LOG=info BIND_ADDR=127.0.0.1 \
  PORT=0 FAIRNESS_PORT=0 LEADERBOARD_PORT=0 PROGRESSION_PORT=0 SHARDS=2 \
  DATA_DIR="$work/data" DURABILITY=batch IDEMP_HOST_SHARE=100 \
  HMAC_SECRET="$secret" RECEIPT_SECRET="$secret" "${engine_env[@]}" \
  "$bin/liveops" </dev/null >"$work/engine.out" 2>"$work/engine.log") &
engine_pid=$!

gateway= fairness= leaderboard=
deadline=$((SECONDS + 30))
until [ -n "$gateway" ] && [ -n "$fairness" ] && [ -n "$leaderboard" ] &&
  curl -sf --max-time 1 "http://127.0.0.1:$gateway/readyz" >/dev/null 2>&1; do
  alive "$engine_pid" || fail "the engine exited during start-up"
  [ "$SECONDS" -lt "$deadline" ] || fail "the engine was not ready within 30 s"
  [ -n "$gateway" ] || gateway=$(port gateway)
  [ -n "$fairness" ] || fairness=$(port fairness)
  [ -n "$leaderboard" ] || leaderboard=$(port leaderboard)
  sleep 0.1
done

if [ -n "$smoke" ]; then
  args=(--players 150 --duration 4 --seed 1 --json "$work/smoke.json" "${args[@]}")
fi
status=0
HMAC_SECRET=$secret timeout -k 5 900 "$bin/fairsim" --port "$gateway" --read-port "$leaderboard" \
  --fairness-port "$fairness" --rate-limit-max "$rate_limit" "${args[@]}" || status=$?
alive "$engine_pid" || fail "the engine died during the run"
if [ -n "$smoke" ]; then
  [ "$status" = 0 ] || fail "fairsim exited with $status"
  # End to end: events answered, players and boards read.
  python3 - "$work/smoke.json" <<'PY' || fail "the simulator did not run end to end"
import json, sys
r = json.load(open(sys.argv[1]))
run = r["run"]
problems = []
if run["events_sent"] == 0 or run["statuses"].get("202", 0) == 0:
    problems.append(f"no event accepted: {run['statuses']}")
if run["statuses"].get("failed", 0) or run["final_read_errors"]:
    problems.append(f"failures: {run['statuses'].get('failed', 0)} events, {run['final_read_errors']} final reads")
if len(r["boards"]) != 3 or not all(b["entries"] > 0 for b in r["boards"]):
    problems.append(f"boards: {r['boards']}")
if r["honest"]["players"] == 0 or not r["families"]:
    problems.append("no honest players or no cheat family")
for p in problems:
    print(f"fairsim.sh: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  echo "fairsim.sh: smoke OK"
fi
stop_engine || true
exit "$status"
