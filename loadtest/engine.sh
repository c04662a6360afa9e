# Shell helpers shared by the scripts that start an engine (smoke.sh, hostile.sh):
# source it after setting `engine_pid` to the engine's pid (or empty).
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
