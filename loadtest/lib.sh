# Shared by loadtest/compare-echo, compare-fanout, fanout-cpu-cost and compare-publish:
# starting the servers under test, pinning, CPU time from /proc, and the machine's load.
# Source it from the repository root after setting `results` (a directory for logs).
#
# Pinning (PIN=1): the server runs on SERVER_CPUS (default 1) and the load generator on
# LOAD_CPUS (default 0), with taskset, so each has a core of its own and a figure says which
# side saturated. Without PIN both share every core, as before.
#
# A shared machine: every measured window also records the CPU that other processes used
# meanwhile (`foreign_ticks`). A run where they used more than FOREIGN_MAX
# percent of a core (default 10) is disturbed: the scripts wait until no compiler runs and
# measure it again, RETRIES times at most (default 3), and the tables say how many runs
# stayed disturbed.

pin=${PIN:-0}
server_cpus=${SERVER_CPUS:-1}
load_cpus=${LOAD_CPUS:-0}
if [ "$pin" = 1 ]; then
  server_prefix=(taskset -c "$server_cpus")
  load_prefix=(taskset -c "$load_cpus")
else
  server_prefix=()
  load_prefix=()
fi
ticks_per_second=$(getconf CLK_TCK)
foreign_max=${FOREIGN_MAX:-10}
retries=${RETRIES:-3}
server_pid=""
# Processes a server needs beside its own (Pushpin's zurl and origin), stopped with it.
helper_pids=()
# The part of helper_pids that is the server's own work (zurl, part of a Pushpin deployment);
# the origin is the application's, reported apart (origin_pid).
origin_pid=""

# stop_server: ends the server started last (a SIGTERM exit status is expected).
stop_server() {
  local pid
  for pid in "$server_pid" "${helper_pids[@]}"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  server_pid=""
  helper_pids=()
  origin_pid=""
}

# install_pushpin: Pushpin (and zurl, which it makes origin requests with) from Debian.
install_pushpin() {
  if ! command -v pushpin >/dev/null; then
    apt-get install -y pushpin >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y pushpin >/dev/null; }
  fi
}

# start_pushpin PORT LOG: Pushpin on PORT, configured for throughput (no per-message rate
# limit, logs at warning level), routing to loadtest/peers/pushpin-origin.js on PORT+1 (its
# publishers' WebSocket on PORT+2), with a private zurl that may reach 127.0.0.1. Pushpin's
# publish API stays on 5561. Sets server_pid (Pushpin's runner, whose descendants are its
# services), helper_pids and origin_pid.
start_pushpin() {
  local port=$1 log=$2 dir
  dir=$(dirname "$log")/pushpin-$port
  mkdir -p "$dir/run" "$dir/log" /var/run/zurl
  sed -e "s#^rundir=.*#rundir=$dir/run#" -e "s#^logdir=.*#logdir=$dir/log#" \
    -e 's#^message_rate=.*#message_rate=1000000#' -e 's#^message_hwm=.*#message_hwm=1000000#' \
    -e 's#^log_level=.*#log_level=1#' -e "s#^routesfile=.*#routesfile=$dir/routes#" \
    /etc/pushpin/pushpin.conf >"$dir/pushpin.conf"
  echo "* 127.0.0.1:$((port + 1))" >"$dir/routes"
  sed -e 's#^deny=.*#deny=#' -e 's#^in_hwm=.*#in_hwm=100000#' -e 's#^out_hwm=.*#out_hwm=100000#' \
    -e 's#^max_open_requests=.*#max_open_requests=100000#' /etc/zurl.conf >"$dir/zurl.conf"
  "${server_prefix[@]}" zurl --config="$dir/zurl.conf" >"$dir/zurl.log" 2>&1 &
  helper_pids+=($!)
  "${server_prefix[@]}" node loadtest/peers/pushpin-origin.js "$((port + 1))" "$((port + 2))" \
    http://127.0.0.1:5561/publish/ >"$dir/origin.log" 2>&1 &
  origin_pid=$!
  helper_pids+=("$origin_pid")
  "${server_prefix[@]}" pushpin --config="$dir/pushpin.conf" --port="127.0.0.1:$port" \
    --merge-output >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q listening "$dir/origin.log" 2>/dev/null &&
      curl -s -o /dev/null -X POST http://127.0.0.1:5561/publish/ -d '{"items":[]}' && return 0
    sleep 0.1
  done
  echo "pushpin did not start: $(cat "$log" "$dir/origin.log")" >&2
  exit 1
}

# install_nats: nats-server from Debian when missing.
install_nats() {
  if ! command -v nats-server >/dev/null; then
    apt-get install -y nats-server >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y nats-server >/dev/null; }
  fi
}

# start_server NAME PORT LOG [MODE]: starts server NAME on 127.0.0.1:PORT and waits (10 s at
# most) for its ready line. MODE is echo or pubsub (default pubsub). Names: ringcast (SHARDS
# shards), ringcast-N (N shards), baseline and baseline-N (the same with the ringcast binary
# at $BASELINE, an older build compared in the same run), floor (the floor program of MODE),
# uws, ws, tokio-tungstenite (echo), nats (pubsub; its monitoring port is PORT+2000),
# ringcast-deflate (SHARDS shards, --websocket-compression), uws-shared and uws-dedicated
# (pubsub with uWS's SHARED_COMPRESSOR or DEDICATED_COMPRESSOR; loadtest/peers/uws-pubsub.js),
# pushpin (pubsub over SSE only; see start_pushpin), socketio (pubsub: the npm socket.io server,
# loadtest/peers/socketio-pubsub.js).
start_server() {
  local name=$1 port=$2 log=$3 mode=${4:-pubsub}
  local shards=${SHARDS:-1} echo_flag=()
  [ "$mode" = echo ] && echo_flag=(--echo)
  case $name in
    pushpin) start_pushpin "$port" "$log"; return 0 ;;
    ringcast) "${server_prefix[@]}" target/release/ringcast --listen "127.0.0.1:$port" \
      "${echo_flag[@]}" --shards "$shards" --log warn >"$log" 2>&1 & ;;
    ringcast-deflate) "${server_prefix[@]}" target/release/ringcast --listen "127.0.0.1:$port" \
      "${echo_flag[@]}" --shards "$shards" --websocket-compression --log warn >"$log" 2>&1 & ;;
    ringcast-*) "${server_prefix[@]}" target/release/ringcast --listen "127.0.0.1:$port" \
      "${echo_flag[@]}" --shards "${name#ringcast-}" --log warn >"$log" 2>&1 & ;;
    baseline) "${server_prefix[@]}" "$BASELINE" --listen "127.0.0.1:$port" \
      "${echo_flag[@]}" --shards "$shards" --log warn >"$log" 2>&1 & ;;
    baseline-*) "${server_prefix[@]}" "$BASELINE" --listen "127.0.0.1:$port" \
      "${echo_flag[@]}" --shards "${name#baseline-}" --log warn >"$log" 2>&1 & ;;
    floor)
      if [ "$mode" = echo ]; then
        "${server_prefix[@]}" target/release/ringcast-loadtest floor echo \
          --listen "127.0.0.1:$port" --threads "$shards" >"$log" 2>&1 &
      else
        "${server_prefix[@]}" target/release/ringcast-loadtest floor fanout \
          --listen "127.0.0.1:$port" >"$log" 2>&1 &
      fi ;;
    uws)
      if [ "$mode" = echo ]; then
        "${server_prefix[@]}" node loadtest/peers/uws-echo.js "$port" >"$log" 2>&1 &
      else
        "${server_prefix[@]}" node loadtest/peers/uws-pubsub.js "$port" >"$log" 2>&1 &
      fi ;;
    uws-shared|uws-dedicated) UWS_COMPRESSION=${name#uws-} "${server_prefix[@]}" \
      node loadtest/peers/uws-pubsub.js "$port" >"$log" 2>&1 & ;;
    ws) "${server_prefix[@]}" node loadtest/peers/ws-echo.js "$port" >"$log" 2>&1 & ;;
    socketio) "${server_prefix[@]}" node loadtest/peers/socketio-pubsub.js "$port" >"$log" 2>&1 & ;;
    tokio-tungstenite) "${server_prefix[@]}" target/release/ringcast-peer-tokio-tungstenite \
      "$port" >"$log" 2>&1 & ;;
    nats)
      printf 'listen: 127.0.0.1:%s\nhttp: 127.0.0.1:%s\nwebsocket { listen: "127.0.0.1:%s", no_tls: true }\n' \
        "$((port + 1000))" "$((port + 2000))" "$port" >"$log.conf"
      "${server_prefix[@]}" nats-server -c "$log.conf" >"$log" 2>&1 & ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    grep -Eq 'listening|Server is ready' "$log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start: $(cat "$log")" >&2
  exit 1
}

# cpu_ticks PID...: utime + stime of these processes (all their threads), in clock ticks.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086
    set -- $fields
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# descendants PID: PID and every process below it.
descendants() {
  local pid
  echo "$1"
  for pid in $(pgrep -P "$1" || true); do descendants "$pid"; done
}

# machine_load: the 1-minute load average and the count of processes running now.
machine_load() {
  echo "load $(cut -d' ' -f1 /proc/loadavg), $(grep -c '^processor' /proc/cpuinfo) cpus"
}

# foreign_ticks PID...: CPU ticks (user + system) used so far by every process except kernel
# threads, this script's own shell, and PIDS and their descendants. Niced processes count too:
# a runnable background task delays the wake-ups a ping-pong benchmark lives on even when it
# gets little CPU.
foreign_ticks() {
  python3 - "$$" "$@" <<'PYTHON'
import os, sys
excluded = {int(pid) for pid in sys.argv[1:]}
parents, ticks = {}, {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        continue
    pid, ppid = int(entry), int(fields[1])
    parents[pid] = ppid
    if ppid != 2 and pid != 2:
        ticks[pid] = int(fields[11]) + int(fields[12])
def ours(pid):
    seen = set()
    while pid and pid not in seen:
        if pid in excluded:
            return True
        seen.add(pid)
        pid = parents.get(pid, 0)
    return False
print(sum(value for pid, value in ticks.items() if not ours(pid)))
PYTHON
}

# compilers_running: how many compilers and linkers run now (other engineers' builds).
compilers_running() {
  ps -eo comm= | grep -cE '^(rustc|cc1|cc1plus|ld|rust-lld|cargo)$' || true
}

# wait_quiet: waits (at most QUIET_WAIT_MAX seconds, default 900) until, over 5 s, no
# compiler ran and other processes used at most FOREIGN_MAX percent of a core.
wait_quiet() {
  local waited=0 before
  while [ "$waited" -lt "${QUIET_WAIT_MAX:-900}" ]; do
    before=$(foreign_ticks)
    sleep 5
    waited=$((waited + 5))
    if [ "$(compilers_running)" = 0 ] && ! disturbed "$(($(foreign_ticks) - before))" 5000000000; then
      return 0
    fi
  done
  echo "still busy after ${QUIET_WAIT_MAX:-900} s: measuring anyway" >&2
}

# disturbed FOREIGN_TICKS ELAPSED_NS: whether other processes used more than FOREIGN_MAX
# percent of a core during a window of ELAPSED_NS.
disturbed() {
  awk -v ticks="$1" -v ns="$2" -v hz="$ticks_per_second" -v max="$foreign_max" \
    'BEGIN { exit !(ticks / hz / (ns / 1e9) * 100 > max) }'
}
