#!/usr/bin/env bash
# The mirrors under load (issue 10's "Done when"): a release engine with REDIS_URL and
# DB_URL pointing at a redis-server and a Postgres cluster this script starts for itself
# on free ports (so it can stop them), the load generator sending signed batches, and the
# mirrors compared with the API afterwards.
#
#   bash loadtest/mirrors.sh lag              # lag during load, time to exact after it
#   bash loadtest/mirrors.sh outage-redis     # the same with Redis down for OUTAGE_S mid-run
#   bash loadtest/mirrors.sh outage-postgres  # the same with Postgres down for OUTAGE_S
#   bash loadtest/mirrors.sh off              # the same load, no mirror (the baseline)
#   bash loadtest/mirrors.sh rebuild          # Redis emptied under a big board: rebuild time
#   bash loadtest/mirrors.sh bus-nats         # BUS_KIND=nats, nats-server killed mid-run
#
# Knobs (environment): RATE events/s (20000), BATCH events per request (100), LOAD_S
# seconds of load (20), PLAYERS (10000), OUTAGE_S (10), OUTAGE_AT_S (5), SHARDS (2).
# Prints the generator's latency lines, the largest mirror lag seen on /metrics during
# the run, and the seconds from the end of the load until Redis's `lb:1:weekly` equals
# `GET /leaderboard?window=weekly` (every page) and Postgres `events` holds every
# accepted event. Fails if either is not exact within 60 s. Everything listens on
# 127.0.0.1 only and is stopped and deleted on exit.
#
# `rebuild` (Redis only): loads PLAYERS (default 1,500,000) at RATE (50,000) for LOAD_S
# (40) so the weekly board holds about a million players, then kills Redis and starts it
# empty while 20,000 events/s keep arriving, and prints how long the rebuild took (from
# Redis's return until the weekly set holds every player of the engine's board) and the
# ingestion latency meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: loadtest/mirrors.sh lag|outage-redis|outage-postgres|off|rebuild|bus-nats}
if [ "$mode" = rebuild ]; then
  : "${PLAYERS:=1500000}" "${RATE:=50000}" "${LOAD_S:=40}"
fi
if [ "$mode" = bus-nats ]; then
  : "${LOAD_S:=60}" "${OUTAGE_AT_S:=25}"
fi
rate=${RATE:-20000}
batch=${BATCH:-100}
seconds=${LOAD_S:-20}
players=${PLAYERS:-10000}
outage_s=${OUTAGE_S:-10}
outage_at_s=${OUTAGE_AT_S:-5}
shards=${SHARDS:-2}
for tool in curl python3 redis-server redis-cli psql initdb pg_ctl; do
  command -v "$tool" >/dev/null || { echo "mirrors: $tool not found" >&2; exit 1; }
done

# As smoke.sh: the features `cargo bench --workspace` resolves, so CI's build is reused.
cargo build --release -q --workspace --bins --benches
bin="$(cargo metadata -q --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"

secret=mirrors-load-hmac-secret-0123456789abcdef
work=$(mktemp -d "${TMPDIR:-/tmp}/liveops-mirrors.XXXXXX")
chmod 755 "$work"
engine_pid=
# shellcheck source=loadtest/engine.sh
source loadtest/engine.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# as_postgres CMD...: Postgres refuses to run as root.
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_running=
sampler=
# Each step may find its process gone already: none may stop the others (set -e).
cleanup_extra() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
  # The outage runs in a subshell that restarts the servers: their pids live in files.
  for server in redis nats; do
    if [ -s "$work/$server.pid" ]; then kill "$(cat "$work/$server.pid")" 2>/dev/null || true; fi
  done
  if [ -n "$pg_running" ]; then as_postgres pg_ctl -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true; fi
}

redis_port=$(free_port)
pg_port=$(free_port)
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --logfile "$work/redis.log" >/dev/null 2>&1 &
  echo $! >"$work/redis.pid"
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
}
# stop_X: SIGKILL (a crash), reaped when it is this shell's child.
stop_redis() { stop_pid_file "$work/redis.pid"; }
stop_pid_file() {
  local pid
  pid=$(cat "$1")
  rm "$1"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
}
nats_port=$(free_port)
nats_monitor=$(free_port)
start_nats() {
  nats-server -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor" -js -sd "$work/nats" \
    -l "$work/nats.log" >/dev/null 2>&1 &
  echo $! >"$work/nats.pid"
  until curl -sf "http://127.0.0.1:$nats_monitor/healthz" >/dev/null 2>&1; do sleep 0.05; done
}
stop_nats() { stop_pid_file "$work/nats.pid"; }
# Messages in the LIVEOPS stream, as the server counts them (it drops re-sent ids).
stream_messages() {
  curl -s "http://127.0.0.1:$nats_monitor/jsz?streams=true" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(s["state"]["messages"] for a in d.get("account_details",[]) for s in a.get("stream_detail",[])))'
}
start_postgres() {
  as_postgres pg_ctl -D "$work/pg" -l "$work/pg/server.log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
  pg_running=1
}
stop_postgres() { as_postgres pg_ctl -D "$work/pg" -m immediate -w stop >/dev/null; pg_running=; }

mirrors=()
if [ "$mode" = bus-nats ]; then
  command -v nats-server >/dev/null || { echo "mirrors: nats-server not found" >&2; exit 1; }
  start_nats
  mirrors=(BUS_KIND=nats NATS_URL="nats://127.0.0.1:$nats_port")
elif [ "$mode" = rebuild ]; then
  start_redis
  mirrors=(REDIS_URL="redis://127.0.0.1:$redis_port")
elif [ "$mode" != off ]; then
  start_redis
  mkdir "$work/pg" && chown postgres "$work/pg" 2>/dev/null || true
  as_postgres initdb -D "$work/pg" -U postgres --auth=trust >/dev/null
  start_postgres
  mirrors=(REDIS_URL="redis://127.0.0.1:$redis_port" DB_URL="postgres://postgres@127.0.0.1:$pg_port/postgres")
fi

(cd "$work" && exec env -i PATH="$PATH" ENV=dev RUST_LOG=info BIND_ADDR=127.0.0.1 \
  PORT=0 FAIRNESS_PORT=0 LEADERBOARD_PORT=0 PROGRESSION_PORT=0 SHARDS="$shards" \
  DATA_DIR="$work/data" HMAC_SECRET="$secret" RECEIPT_SECRET="$secret" \
  RATE_LIMIT_MAX=1000000 GAIN_RATE_MAX=1000000 CADENCE_FRACTION=0 CADENCE_FLOOR_SEC=0 READ_UNITS_PER_HOST_S=100000000 "${mirrors[@]}" \
  "$bin/liveops" </dev/null >"$work/engine.out" 2>"$work/engine.log") &
engine_pid=$!
for _ in $(seq 300); do
  gateway=$(port gateway); leaderboard=$(port leaderboard)
  [ -n "$gateway" ] && [ -n "$leaderboard" ] &&
    curl -sf "http://127.0.0.1:$gateway/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$gateway/readyz" >/dev/null || { tail -20 "$work/engine.log"; exit 1; }

# The largest lag the mirrors report while the load runs, sampled every 100 ms.
sample_lag() {
  while :; do
    curl -s "http://127.0.0.1:$gateway/metrics" | grep -E '^liveops_mirror_lag_(seconds|records)' |
      sed "s/^/$(date +%s.%N) /" || true
    sleep 0.1
  done >"$work/lag.txt"
}
[ "$mode" != off ] && { sample_lag & sampler=$!; }

outage() {
  sleep "$outage_at_s"
  case $mode in
    outage-redis) stop_redis; echo "redis down at ${outage_at_s}s" ;;
    bus-nats) stop_nats; echo "nats-server killed at ${outage_at_s}s" ;;
    outage-postgres) stop_postgres; echo "postgres down at ${outage_at_s}s" ;;
  esac
  sleep "$outage_s"
  case $mode in
    outage-redis) start_redis; echo "redis back after ${outage_s}s" ;;
    bus-nats) start_nats; echo "nats-server back after ${outage_s}s" ;;
    outage-postgres) start_postgres; echo "postgres back after ${outage_s}s" ;;
  esac
}
case $mode in outage-* | bus-nats) outage & outage_pid=$! ;; esac

requests=$(( rate / batch ))
HMAC_SECRET=$secret "$bin/loadtest" --port "$gateway" --read-port "$leaderboard" \
  --rate "$requests" --batch "$batch" --duration "$seconds" --warmup 1 --connections 32 \
  --players "$players" --json "$work/load.json" | grep -E "^(class|write) |accepted events/s"
load_end=$(date +%s.%N)
case $mode in outage-* | bus-nats) wait "$outage_pid" ;; esac
if [ "$mode" = off ]; then exit 0; fi
if [ "$mode" = bus-nats ]; then
  accepted=$(curl -s "http://127.0.0.1:$gateway/metrics" |
    awk '/^liveops_events_accepted_total / { print $2 }')
  until [ "$(stream_messages)" -ge "$accepted" ] ||
    [ "$(python3 -c "import time; print(int(time.time() - $load_end > 60))")" = 1 ]; do
    sleep 0.1
  done
  in_stream=$(stream_messages)
  echo "accepted $accepted; in the stream $in_stream distinct messages," \
    "$(python3 -c "import time; print(f'{time.time() - $load_end:.2f}')") s after the load"
  # The outage, and the catching up after it, as the sampler saw them: lag outside
  # [kill, first sample back under 2 s after the restart] is the steady state.
  python3 - "$work" "$outage_at_s" "$outage_s" <<'PY'
import sys
work, at_s, down_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
samples = [(float(t), float(v)) for t, name, v in (l.split(" ") for l in open(f"{work}/lag.txt"))
           if name.startswith("liveops_mirror_lag_seconds")]
start = samples[0][0]
kill, back = start + at_s, start + at_s + down_s
caught_up = next((t for t, v in samples if t > back and v < 2.0), None)
steady = [v for t, v in samples if t < kill or (caught_up is not None and t >= caught_up)]
worst = max(v for _, v in samples)
print(f"bus lag: largest {worst:.3f} s (outage included); outside the outage {max(steady, default=0):.3f} s;"
      f" back under 2 s {caught_up - back:.2f} s after the broker's return" if caught_up else
      f"bus lag: largest {worst:.3f} s; never back under 2 s after the broker's return")
PY
  [ "$in_stream" = "$accepted" ]
  exit
fi
if [ "$mode" = rebuild ]; then
  # Once the mirror has caught up (the set stops growing), it holds the engine's board.
  board=-1
  while :; do
    now=$(redis-cli -p "$redis_port" zcard lb:1:weekly)
    [ "$now" = "$board" ] && break
    board=$now
    sleep 1
  done
  echo "board: $board players in lb:1:weekly. Killing Redis; it returns empty."
  stop_redis
  rebuilds_before=$(grep -c "Redis mirror rebuilt" "$work/engine.log" || true)
  HMAC_SECRET=$secret "$bin/loadtest" --port "$gateway" --read-port "$leaderboard" \
    --rate $(( 20000 / batch )) --batch "$batch" --duration 20 --connections 32 \
    --players "$players" >"$work/during.txt" 2>&1 &
  during=$!
  sleep 1
  start_redis
  back=$(date +%s.%N)
  # New players arrive meanwhile: the rebuild is done when Redis holds at least the
  # board as it was.
  until [ "$(redis-cli -p "$redis_port" zcard lb:1:weekly)" -ge "$board" ]; do sleep 0.05; done
  done_at=$(date +%s.%N)
  echo "rebuild: $(python3 -c "print(f'{$done_at - $back:.2f}')") s from Redis's return to every player back in lb:1:weekly"
  # The whole rebuild (every window, then the progression hashes), as the sink logs it.
  until [ "$(grep -c "Redis mirror rebuilt" "$work/engine.log" || true)" -gt "$rebuilds_before" ]; do sleep 0.2; done
  echo "whole rebuild (3 windows and $board+ hashes): $(grep "Redis mirror rebuilt" "$work/engine.log" | tail -1 | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p') ms"
  wait "$during"
  echo "ingestion at 20,000 events/s across the outage and the rebuild:"
  grep -E "^(class|write) " "$work/during.txt"
  exit 0
fi

python3 - "$work" "$gateway" "$leaderboard" "$redis_port" "$pg_port" "$load_end" <<'PY'
import json, subprocess, sys, time, urllib.request
work, gateway, leaderboard, redis_port, pg_port, load_end = sys.argv[1:7]
load_end = float(load_end)
accepted = None
def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)
def api_board():
    board, offset = {}, 0
    while True:
        page = get(leaderboard, f"/leaderboard?window=weekly&limit=1000&offset={offset}")
        for e in page["entries"]:
            board[e["playerId"]] = e["score"]
        if len(page["entries"]) < 1000:
            return board
        offset += 1000
def redis_board():
    out = subprocess.run(["redis-cli", "-p", redis_port, "--raw", "ZREVRANGE", "lb:1:weekly", "0", "-1", "WITHSCORES"],
                         capture_output=True, text=True).stdout.split("\n")
    return {out[i]: int(float(out[i + 1])) for i in range(0, len(out) - 1, 2) if out[i]}
def events_count():
    out = subprocess.run(["psql", f"postgres://postgres@127.0.0.1:{pg_port}/postgres", "-tAc",
                          "SELECT count(*) FROM events"], capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else -1
# Every event the engine accepted, as its own counter says (the generator's count misses
# answers that came after its timeout).
def accepted_total():
    for line in urllib.request.urlopen(f"http://127.0.0.1:{gateway}/metrics", timeout=10).read().decode().splitlines():
        if line.startswith("liveops_events_accepted_total "):
            return int(float(line.split()[1]))
    raise SystemExit("no liveops_events_accepted_total")
accepted = accepted_total()
redis_exact = pg_exact = None
while time.time() < load_end + 60 and (redis_exact is None or pg_exact is None):
    now = time.time()
    if redis_exact is None and redis_board() == api_board():
        redis_exact = now - load_end
    if pg_exact is None and events_count() == accepted:
        pg_exact = now - load_end
    time.sleep(0.05)
lag_s = lag_records = 0.0
for line in open(f"{work}/lag.txt"):
    _, name, value = line.split(" ")
    if name.startswith("liveops_mirror_lag_seconds"):
        lag_s = max(lag_s, float(value))
    else:
        lag_records = max(lag_records, float(value))
print(f"accepted {accepted}; largest mirror lag seen: {lag_s:.3f} s, {lag_records:.0f} records")
print(f"redis lb:1:weekly == API: {'%.2f s after the load' % redis_exact if redis_exact is not None else 'NOT within 60 s'}")
print(f"postgres events == accepted: {'%.2f s after the load' % pg_exact if pg_exact is not None else 'NOT within 60 s (%d of %d)' % (events_count(), accepted)}")
sys.exit(0 if redis_exact is not None and pg_exact is not None else 1)
PY
