# shellcheck shell=bash
# What scripts/cluster-bench.sh and scripts/partition-bench.sh share, sourced by them (not run):
#   - on sourcing: DATABASE_URL required; every EDDY_* of the caller's environment unset (each
#     process gets only what it is given here); a temp dir $work (eddy-$bench_name.XXXXXX under
#     $TMPDIR or /tmp); the benchmark database's name $db (eddy_bench_<pid>) and its URL
#     $bench_db_url; the EXIT cleanup (and INT/TERM: exit 130, cleanup on EXIT): every process
#     registered with `started` killed (-9) by its PID and waited for, on failure the tail of
#     every $work/*.log, the database dropped if $db_created is set, $work removed (kept on
#     failure with BENCH_KEEP set);
#   - messages: say, fail; free_port, elapsed; the PIDs: started, reap, alive, stop ($stop_notes);
#   - the run: machine_before ($load_before), machine_after, print_load, build_eddy ($eddy),
#     create_db, drop_db, start_nats ($nats_port, $nats_pid), stop_nats;
#   - eddy: start_eddy, start_member (a cluster instance), wait_ready, status, load_until,
#     stop_load, manual_checkpoint, await_after_events.
# The sourcing script sets beforehand: `set -euo pipefail`, the repo root as its working
# directory, and bench_name (its name, in messages and the temp dir's name). Used when called:
# batch and connections (load_until), lease_timeout (start_member), after_events_wanted
# (await_after_events), load_stall_polls (load_until: optional).
# shellcheck disable=SC2154 # batch, connections, lease_timeout, … are the sourcing script's

: "${bench_name:?set bench_name before sourcing bench-lib.sh}"
: "${DATABASE_URL:?set DATABASE_URL=postgres://… (a server where a database may be created)}"

# Only what each process is given here: no EDDY_* of the caller's environment leaks in.
for var in $(compgen -e | grep '^EDDY_' || true); do unset "$var"; done

say() { printf '\n== %s\n' "$*"; }
fail() {
  echo "$bench_name: $*" >&2
  exit 1
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Seconds between two $EPOCHREALTIME readings.
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/eddy-$bench_name.XXXXXX")
db="eddy_bench_$$"
db_created=
declare -gA running=() # pid -> what it is

# Every process started here, by PID; the database; the temp dir. Logs' tails on failure.
cleanup() {
  local rc=$?
  trap - EXIT
  local pid
  for pid in "${!running[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${!running[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    local log
    for log in "$work"/*.log; do
      [ -f "$log" ] || continue
      echo "--- tail of $(basename "$log")" >&2
      tail -n 15 "$log" | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
    done
  fi
  if [ -n "$db_created" ]; then
    drop_db 2>/dev/null || echo "$bench_name: could not drop database $db" >&2
  fi
  if [ "$rc" != 0 ] && [ -n "${BENCH_KEEP:-}" ]; then
    echo "$bench_name: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# started PID WHAT: a process started here, killed by the cleanup unless reaped before.
started() { running[$1]=$2; }
# Waits for a process started here to exit (it was signalled) and forgets its PID.
reap() {
  { wait "$1"; } 2>/dev/null || true
  unset "running[$1]"
}
# alive PID: running (not exited, not a zombie waiting to be reaped).
alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
# stop PID NAME: SIGTERM (final checkpoints, leases released), then its exit; kill -9 after a
# minute, noted in $stop_notes (for the summary).
stop_notes=""
stop() {
  kill -TERM "$1" 2>/dev/null || true
  local i
  for i in $(seq 1 600); do
    alive "$1" || break
    if [ "$i" = 600 ]; then
      echo "$2 did not exit within a minute of SIGTERM: kill -9" >&2
      stop_notes+="$2 ignored SIGTERM (killed -9). "
      kill -9 "$1" 2>/dev/null || true
    fi
    sleep 0.1
  done
  reap "$1"
}

# machine_before, machine_after: the machine's load (uptime) at the start, in $load_before,
# and at the end; print_load: both, for the summary.
machine_before() {
  say "machine"
  uptime | tee "$work/uptime.before"
  load_before=$(cat "$work/uptime.before")
}
machine_after() {
  say "machine"
  uptime | tee "$work/uptime.after"
}
print_load() {
  echo "load before: $load_before"
  echo "load after:  $(cat "$work/uptime.after")"
}

# build_eddy: the release binary, its path in $eddy.
build_eddy() {
  say "cargo build --release"
  cargo build --release --locked --quiet --bin eddy
  eddy=target/release/eddy
}

# The benchmark database on DATABASE_URL's server: create_db makes it (dropped by the cleanup
# from then on), drop_db drops it with its connections.
bench_db_url=$(python3 -c '
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(u._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$db")
create_db() {
  psql "$DATABASE_URL" -qc "create database $db" >/dev/null
  db_created=1
}
drop_db() {
  PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -qc "drop database if exists $db with (force)" >/dev/null
}

# start_nats: a throwaway `nats-server -js` on 127.0.0.1:$nats_port (store and log in $work),
# its PID in $nats_pid, healthy (a minute at most); stop_nats: SIGTERM, then its exit.
start_nats() {
  say "NATS: a throwaway nats-server -js"
  local nats_bin nats_monitor i
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  [ -x "$nats_bin" ] || fail "nats-server not found (on PATH or in /usr/sbin)"
  nats_port=$(free_port)
  nats_monitor=$(free_port)
  "$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor" -sd "$work/nats-store" \
    -l "$work/nats-server.log" &
  nats_pid=$!
  started "$nats_pid" nats-server
  for i in $(seq 1 600); do
    kill -0 "$nats_pid" 2>/dev/null || fail "nats-server exited at start"
    curl -fs --max-time 2 "http://127.0.0.1:$nats_monitor/healthz" >/dev/null 2>&1 && break
    [ "$i" = 600 ] && fail "nats-server was not healthy within a minute"
    sleep 0.1
  done
  "$nats_bin" --version
  echo "nats-server on 127.0.0.1:$nats_port, store in $work/nats-store"
}
stop_nats() {
  kill -TERM "$nats_pid" 2>/dev/null || true
  reap "$nats_pid"
}

# start_eddy NAME PORT [VAR=VALUE…]: `eddy serve` on 127.0.0.1:PORT, data dir $work/NAME, log
# $work/NAME.log (appended: a restarted instance keeps its history); its PID in $STARTED.
start_eddy() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$work/$name"
  env "$@" DATABASE_URL="$bench_db_url" EDDY_LISTEN="127.0.0.1:$port" \
    EDDY_DATA_DIR="$work/$name" EDDY_LOG=info "$eddy" serve >>"$work/$name.log" 2>&1 &
  STARTED=$!
  started "$STARTED" "eddy $name"
}
# start_member NAME PORT NODE_ID ADVERTISE_URL CLUSTER_NAME: start_eddy of a cluster instance
# (the NATS of start_nats, R=1, lease timeout $lease_timeout); its PID in $STARTED.
start_member() {
  start_eddy "$1" "$2" EDDY_NATS_URL="nats://127.0.0.1:$nats_port" EDDY_NODE_ID="$3" \
    EDDY_ADVERTISE_URL="$4" EDDY_CLUSTER_NAME="$5" EDDY_NATS_REPLICAS=1 \
    EDDY_LEASE_TIMEOUT="$lease_timeout"
}

# wait_ready PID URL NAME: until /readyz answers 200 (two minutes at most).
wait_ready() {
  local i
  for i in $(seq 1 1200); do
    kill -0 "$1" 2>/dev/null || fail "$3 exited at start (see its log)"
    curl -fs --max-time 2 "$2/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "$3 was not ready within two minutes"
}

# status URL PIPELINE: the pipeline's status document, asked again while it is unavailable
# (a failover under way answers 503) for five minutes at most.
status() {
  local i doc
  for i in $(seq 1 300); do
    if doc=$(curl -fs --max-time 10 "$1/v1/pipelines/$2"); then
      echo "$doc" | jq -c .status
      return 0
    fi
    sleep 1
  done
  fail "the status of $2 at $1 was not answered within five minutes"
}

# load_until PIPELINE USERS KEYS FILE STATUS_URL URLS [ARG…]: `eddy load --url URLS --pipeline
# PIPELINE ARG… --users USERS` (--batch $batch, --connections $connections; the pipeline created
# at the first of URLS), its output in FILE, until status.keys.sessions at STATUS_URL holds KEYS
# (30 minutes at most; with load_stall_polls set, a failure also once that many polls in a row
# read the same count). The generator keeps running: its PID in $LOAD_PID, the keys reached in
# $LOAD_KEYS, the seconds it took in $LOAD_SECONDS.
load_until() {
  local name=$1 users=$2 want=$3 out=$4 status_url=$5 urls=$6
  shift 6
  "$eddy" load --url "$urls" --pipeline "$name" "$@" --users "$users" \
    --batch "$batch" --connections "$connections" --duration 1800s >"$out" 2>&1 &
  LOAD_PID=$!
  started "$LOAD_PID" "eddy load $name"
  local load_started=$EPOCHREALTIME keys=0 deadline=$((SECONDS + 1800)) last=-1 same=0
  while [ "$keys" -lt "$want" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$name did not reach $want keys in 30 minutes"
    kill -0 "$LOAD_PID" 2>/dev/null || { cat "$out" >&2; fail "eddy load of $name exited"; }
    sleep 2
    keys=$(status "$status_url" "$name" 2>/dev/null | jq -r '.keys.sessions // 0' || echo 0)
    keys=${keys:-0}
    [ -n "${load_stall_polls:-}" ] || continue
    if [ "$keys" = "$last" ]; then same=$((same + 1)); else same=0 last=$keys; fi
    [ "$same" -lt "$load_stall_polls" ] || fail "$name stays at $keys session keys (--users $users too few for $want?)"
  done
  # shellcheck disable=SC2034 # read by the sourcing script
  LOAD_KEYS=$keys
  LOAD_SECONDS=$(elapsed "$load_started" "$EPOCHREALTIME")
  echo "$keys session keys after $LOAD_SECONDS s of load"
}
stop_load() {
  kill -TERM "$LOAD_PID" 2>/dev/null || true
  reap "$LOAD_PID"
}

# manual_checkpoint URL PIPELINE: POST …/checkpoints at URL (15 minutes at most): the answer in
# $checkpoint, its input_offset in $checkpoint_offset, the seconds it took in $checkpoint_seconds.
manual_checkpoint() {
  local checkpoint_started=$EPOCHREALTIME
  checkpoint=$(curl -fs --max-time 900 -X POST "$1/v1/pipelines/$2/checkpoints") \
    || fail "the manual checkpoint of $2 failed"
  checkpoint_seconds=$(elapsed "$checkpoint_started" "$EPOCHREALTIME")
  echo "checkpoint, answered after $checkpoint_seconds s: $(echo "$checkpoint" | jq -c '{id, status, input_offset, duration_ms, keys_written, bytes}')"
  checkpoint_offset=$(echo "$checkpoint" | jq .input_offset)
}
# await_after_events URL PIPELINE: until its wal_offset at URL is $after_events_wanted past
# $checkpoint_offset (five minutes of polls at most).
await_after_events() {
  local i offset
  for i in $(seq 1 3000); do
    offset=$(status "$1" "$2" | jq '.wal_offset // 0')
    [ $((offset - checkpoint_offset)) -ge "$after_events_wanted" ] && break
    [ "$i" = 3000 ] && fail "$2 did not take $after_events_wanted events after its checkpoint"
    sleep 0.1
  done
}
