# Shell helpers shared by the scripts that start an engine (smoke.sh, hostile.sh,
# fairsim.sh, mirrors.sh): source it after setting `work` (the script's temporary
# directory, where the engine logs to engine.log) and `engine_pid` (empty until the engine
# starts). It installs the exit traps: on any exit the script's `cleanup_extra` runs if it
# defines one, then the engine is stopped and `work` deleted.
# alive PID: the process exists and is not a zombie (kill -0 succeeds on zombies).
alive() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
# stop_engine: SIGTERM, up to 10 s to exit, then SIGKILL; returns the engine's exit status.
stop_engine() {
  local pid=$engine_pid
  engine_pid=
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid"
}
# port SERVICE: the port the engine logged for SERVICE (it listens on port 0), or nothing
# yet.
port() { sed -n "s/.*listening service=$1 addr=127\.0\.0\.1:\([0-9]*\).*/\1/p" "$work/engine.log" | head -n 1; }
cleanup() {
  local status=$?
  if declare -F cleanup_extra >/dev/null; then cleanup_extra || true; fi
  if [ -n "$engine_pid" ]; then stop_engine || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
