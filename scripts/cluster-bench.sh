#!/usr/bin/env bash
# Cluster figures (issue 13), a benchmark, not a test: all in ONE run on this machine, so that
# the ratios compare like with like on a shared, noisy machine.
#   a. single-instance mode (no EDDY_NATS_URL, the same PostgreSQL): `eddy load` for 20s;
#   b. cluster mode, three instances on loopback ports, a throwaway `nats-server -js`, R=1:
#      `eddy load` against all three URLs for 20s, same batch and connections as a;
#   c. failover: a cluster pipeline loaded until status.keys.sessions holds 1,000,000 keys, a
#      manual checkpoint (the generator paused meanwhile), BENCH_AFTER_EVENTS more events
#      after it, kill -9 of the leader, then a small batch
#      posted every 50 ms at another instance until acknowledged: the time from the kill to
#      the first acknowledgement (EDDY_LEASE_TIMEOUT 5s, the default). Repeated
#      BENCH_FAILOVER_RUNS times (the killed instance is started again between runs).
# Prints a summary table. A fresh database eddy_bench_<pid> on DATABASE_URL's server is made
# and dropped; every process started here is stopped by its PID, and the temp dir removed,
# also on failure.
# Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/cluster-bench.sh
# Knobs: BENCH_SECONDS (20), BENCH_BATCH (1000), BENCH_CONNECTIONS (9), BENCH_FAILOVER_RUNS (3),
# BENCH_FAILOVER_USERS (1500000: the load generator's 2M template events then hold ~1.1M
# distinct users; with 1000000 they hold only ~865k), BENCH_FAILOVER_KEYS (1000000),
# BENCH_AFTER_EVENTS (100000: events taken after the checkpoint, at least), BENCH_LEASE_TIMEOUT (5s),
# BENCH_KEEP (set: the temp dir with every log is kept when the run fails).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

: "${DATABASE_URL:?set DATABASE_URL=postgres://… (a server where a database may be created)}"
load_seconds=${BENCH_SECONDS:-20}
batch=${BENCH_BATCH:-1000}
connections=${BENCH_CONNECTIONS:-9}
runs=${BENCH_FAILOVER_RUNS:-3}
failover_users=${BENCH_FAILOVER_USERS:-1500000}
failover_keys=${BENCH_FAILOVER_KEYS:-1000000}
after_events_wanted=${BENCH_AFTER_EVENTS:-100000}
lease_timeout=${BENCH_LEASE_TIMEOUT:-5s}

# Only what each process is given here: no EDDY_* of the caller's environment leaks in.
for var in $(compgen -e | grep '^EDDY_' || true); do unset "$var"; done

say() { printf '\n== %s\n' "$*"; }
fail() {
  echo "cluster-bench: $*" >&2
  exit 1
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Seconds between two $EPOCHREALTIME readings.
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/eddy-cluster-bench.XXXXXX")
db="eddy_bench_$$"
db_created=
declare -A running=() # pid -> what it is

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
    psql "$DATABASE_URL" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 \
      || echo "cluster-bench: could not drop database $db" >&2
  fi
  if [ "$rc" != 0 ] && [ -n "${BENCH_KEEP:-}" ]; then
    echo "cluster-bench: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started() { running[$1]=$2; }
# Waits for a process started here to exit (it was signalled) and forgets its PID.
reap() {
  { wait "$1"; } 2>/dev/null || true
  unset "running[$1]"
}

say "machine"
uptime | tee "$work/uptime.before"
load_before=$(cat "$work/uptime.before")

say "cargo build --release"
cargo build --release --locked --quiet --bin eddy
eddy=target/release/eddy

say "PostgreSQL: database $db"
psql "$DATABASE_URL" -qc "create database $db" >/dev/null
db_created=1
bench_db_url=$(python3 -c '
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(u._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$db")

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

# stop PID: SIGTERM (final checkpoints, leases released), then its exit.
# stop PID NAME: SIGTERM (final checkpoints, leases released), then its exit; kill -9 after a
# minute, noted in the summary.
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
# alive PID: running (not exited, not a zombie waiting to be reaped).
alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }

# load_figures FILE: "events/s p50 p99 failures" from an `eddy load` report.
load_figures() {
  local eps p50 p99 failures
  eps=$(sed -n 's/^events_per_s=\([0-9]*\).*/\1/p' "$1")
  p50=$(sed -n 's/^batch_ms p50=\([0-9.]*\).*/\1/p' "$1")
  p99=$(sed -n 's/^batch_ms .*p99=\([0-9.]*\).*/\1/p' "$1")
  failures=$(sed -n 's/^failures=//p' "$1")
  echo "${eps:-?} ${p50:-?} ${p99:-?} ${failures:-?}"
}

delete_pipeline() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X DELETE "$1/v1/pipelines/$2" || true)
  [ "$code" = 204 ] || fail "DELETE $2 at $1 answered $code"
}

# status URL PIPELINE: the pipeline's status document.
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
# leader_of URL PIPELINE: the node that leads it, as GET /v1/cluster at URL says.
leader_of() {
  curl -fs --max-time 10 "$1/v1/cluster" \
    | jq -r --arg n "$2" '[.pipelines[] | select(.name==$n) | .leader][0] // "none"'
}

load_args=(--batch "$batch" --connections "$connections" --duration "${load_seconds}s")

say "a. single instance (PostgreSQL, no NATS): eddy load ${load_args[*]}"
port=$(free_port)
single_url="http://127.0.0.1:$port"
start_eddy single "$port"
single_pid=$STARTED
wait_ready "$single_pid" "$single_url" single
"$eddy" load --url "$single_url" --pipeline bench "${load_args[@]}" --server-pid "$single_pid" \
  | tee "$work/a.txt"
read -r a_eps a_p50 a_p99 a_fail < <(load_figures "$work/a.txt")
# Deleted, so that the cluster instances (same database) do not find its definition.
delete_pipeline "$single_url" bench
stop "$single_pid" single

say "NATS: a throwaway nats-server -js"
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

# Three cluster instances n0..n2.
declare -a node_port=() node_url=() node_pid=() node_down=()
start_node() {
  local i=$1
  start_eddy "n$i" "${node_port[$i]}" EDDY_NATS_URL="nats://127.0.0.1:$nats_port" \
    EDDY_NODE_ID="n$i" EDDY_ADVERTISE_URL="${node_url[$i]}" EDDY_CLUSTER_NAME="bench$$" \
    EDDY_NATS_REPLICAS=1 EDDY_LEASE_TIMEOUT="$lease_timeout"
  node_pid[$i]=$STARTED
}
for i in 0 1 2; do
  node_port[$i]=$(free_port)
  node_url[$i]="http://127.0.0.1:${node_port[$i]}"
  start_node "$i"
done
for i in 0 1 2; do wait_ready "${node_pid[$i]}" "${node_url[$i]}" "n$i"; done
all_urls=$(IFS=,; echo "${node_url[*]}")

say "b. cluster, 3 instances, NATS R=1: eddy load --url $all_urls ${load_args[*]}"
"$eddy" load --url "$all_urls" --pipeline bench "${load_args[@]}" --server-pid "${node_pid[0]}" \
  | tee "$work/b.txt"
read -r b_eps b_p50 b_p99 b_fail < <(load_figures "$work/b.txt")
bench_leader=$(leader_of "${node_url[1]}" bench)
echo "leader of bench: $bench_leader"
delete_pipeline "${node_url[0]}" bench

# takeovers PIPELINE: how often an instance took its lease over so far, by the logs.
takeovers() {
  cat "$work"/n?.log | sed 's/\x1b\[[0-9;]*m//g' | grep "lease taken" | grep -c "pipeline=$1 " || true
}
# revive_wedged: an instance that does not answer /healthz within 10 s (running, serving
# nothing) is killed (-9) and started again; $wedged lists them.
revive_wedged() {
  local i
  for i in 0 1 2; do
    [ -z "${node_down[$i]:-}" ] || continue
    if ! curl -fs --max-time 10 "${node_url[$i]}/healthz" >/dev/null 2>&1; then
      echo "n$i does not answer /healthz within 10 s (wedged): kill -9 and start it again"
      kill -9 "${node_pid[$i]}" 2>/dev/null || true
      reap "${node_pid[$i]}"
      start_node "$i"
      wait_ready "${node_pid[$i]}" "${node_url[$i]}" "n$i"
      wedged+="n$i,"
    fi
  done
}

declare -a fo_seconds=() fo_notes=()
for r in $(seq 1 "$runs"); do
  lead=$(((r - 1) % 3))
  probe=$(((lead + 1) % 3))
  name="failover$r"
  urls="${node_url[$lead]},${node_url[$(((lead + 1) % 3))]},${node_url[$(((lead + 2) % 3))]}"
  say "c$r. failover: $name created at n$lead, loaded with --users $failover_users until $failover_keys session keys"
  "$eddy" load --url "$urls" --pipeline "$name" --users "$failover_users" --batch "$batch" \
    --connections "$connections" --duration 1800s >"$work/c$r-load.txt" 2>&1 &
  load_pid=$!
  started "$load_pid" "eddy load $name"
  load_started=$EPOCHREALTIME
  keys=0
  deadline=$((SECONDS + 1800))
  while [ "$keys" -lt "$failover_keys" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$name did not reach $failover_keys keys in 30 minutes"
    kill -0 "$load_pid" 2>/dev/null || { cat "$work/c$r-load.txt" >&2; fail "eddy load of $name exited"; }
    sleep 2
    keys=$(status "${node_url[$probe]}" "$name" 2>/dev/null | jq -r '.keys.sessions // 0' || echo 0)
    keys=${keys:-0}
  done
  echo "$keys session keys after $(elapsed "$load_started" "$EPOCHREALTIME") s of load"
  # The generator is paused (SIGSTOP) while the checkpoint is written, so that the events
  # after it are a measured few (it continues in event time on SIGCONT, nothing late).
  kill -STOP "$load_pid"
  leader_before=$(leader_of "${node_url[$probe]}" "$name")
  checkpoint_started=$EPOCHREALTIME
  checkpoint=$(curl -fs --max-time 900 -X POST "${node_url[$probe]}/v1/pipelines/$name/checkpoints") \
    || fail "the manual checkpoint of $name failed"
  checkpoint_seconds=$(elapsed "$checkpoint_started" "$EPOCHREALTIME")
  echo "checkpoint, answered after $checkpoint_seconds s: $(echo "$checkpoint" | jq -c '{id, status, input_offset, duration_ms, keys_written, bytes}')"
  wedged=""
  revive_wedged
  # More events after the checkpoint, at least $after_events_wanted: the takeover replays them.
  checkpoint_offset=$(echo "$checkpoint" | jq .input_offset)
  kill -CONT "$load_pid"
  for i in $(seq 1 3000); do
    offset=$(status "${node_url[$probe]}" "$name" | jq '.wal_offset // 0')
    [ $((offset - checkpoint_offset)) -ge "$after_events_wanted" ] && break
    [ "$i" = 3000 ] && fail "$name did not take $after_events_wanted events after its checkpoint"
    sleep 0.1
  done
  kill -TERM "$load_pid" 2>/dev/null || true
  reap "$load_pid"
  before=$(status "${node_url[$probe]}" "$name")
  echo "before the kill: $(echo "$before" | jq -c '{events, wal_offset, watermark, sessions: .keys.sessions}')"
  after_events=$(($(echo "$before" | jq .wal_offset) - checkpoint_offset))
  # The probe batch: ten events just past the watermark (not late), fresh users.
  watermark=$(echo "$before" | jq .watermark)
  for e in $(seq 0 9); do
    printf '{"user_id":"probe%s_%s","ts":%s,"type":"view","page":"/p/1"}\n' "$r" "$e" "$((watermark + 1000))"
  done >"$work/probe.ndjson"
  # post URL KEY: one probe batch; prints the HTTP status (000: no answer within 2s).
  post() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H 'content-type: application/x-ndjson' \
      -H "idempotency-key: $2" --data-binary @"$work/probe.ndjson" "$1/v1/pipelines/$name/events" || true
  }
  # Served (a failover during the checkpoint is over) before the kill.
  revive_wedged
  for i in $(seq 1 3000); do
    code=$(post "${node_url[$probe]}" "warmup$r")
    [ "$code" = 200 ] && break
    [ "$i" = 3000 ] && fail "the probe batch before the kill answered $code"
    sleep 0.1
  done
  leader=$(leader_of "${node_url[$probe]}" "$name")
  lost=""
  taken=$(takeovers "$name")
  if [ "$taken" != 0 ] || [ -n "$wedged" ]; then
    lost=" BEFORE-THE-KILL:takeovers=$taken,wedged=${wedged:-none}"
    echo "before the kill, $name was taken over $taken times (leader $leader_before, now $leader); wedged: ${wedged:-none}"
  fi
  victim=${leader#n}
  [[ "$victim" =~ ^[012]$ ]] || fail "$name has no leader among n0..n2 ($leader)"
  [ "$victim" != "$probe" ] || probe=$(((victim + 1) % 3))
  echo "kill -9 of the leader n$victim (pid ${node_pid[$victim]}); probing n$probe every 50 ms"
  killed_at=$EPOCHREALTIME
  kill -9 "${node_pid[$victim]}"
  node_down[$victim]=1
  attempts=0
  declare -A seen=()
  while :; do
    attempts=$((attempts + 1))
    code=$(post "${node_url[$probe]}" "probe$r")
    seen[$code]=$((${seen[$code]:-0} + 1))
    if [[ "$code" == 2* ]]; then
      acked_at=$EPOCHREALTIME
      break
    fi
    [ $((${EPOCHREALTIME%.*} - ${killed_at%.*})) -lt 300 ] \
      || fail "no probe batch of $name acknowledged within 300 s of the kill (attempts: $attempts)"
    sleep 0.05
  done
  reap "${node_pid[$victim]}"
  seconds=$(elapsed "$killed_at" "$acked_at")
  answers=$(for c in "${!seen[@]}"; do printf '%s:%s ' "$c" "${seen[$c]}"; done)
  unset seen
  after=$(status "${node_url[$probe]}" "$name")
  new_leader=$(leader_of "${node_url[$probe]}" "$name")
  took=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$new_leader.log" 2>/dev/null | grep "pipeline taken over" \
    | grep "pipeline=$name " | tail -n 1 | grep -o 'took_ms=[0-9]*' | cut -d= -f2 || true)
  replayed=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$new_leader.log" 2>/dev/null | grep "pipeline recovered" \
    | grep "pipeline=$name " | tail -n 1 | grep -o 'replayed=[0-9]*' | cut -d= -f2 || true)
  echo "acknowledged $seconds s after the kill (attempts: $answers); new leader $new_leader, recovery took ${took:-?} ms (replayed ${replayed:-?} records)"
  echo "after: $(echo "$after" | jq -c '{events, wal_offset, sessions: .keys.sessions}')"
  fo_seconds+=("$seconds")
  fo_notes+=("keys=$keys checkpoint_s=$checkpoint_seconds after_checkpoint=$after_events recovery_ms=${took:-?} $leader->$new_leader$lost")
  wedged=""
  revive_wedged
  [ -z "$wedged" ] || fo_notes[-1]+=" wedged-after:$wedged"
  delete_pipeline "${node_url[$probe]}" "$name"
  start_node "$victim"
  node_down[$victim]=""
  wait_ready "${node_pid[$victim]}" "${node_url[$victim]}" "n$victim"
done

for i in 0 1 2; do stop "${node_pid[$i]}" "n$i"; done
kill -TERM "$nats_pid" 2>/dev/null || true
reap "$nats_pid"

say "machine"
uptime | tee "$work/uptime.after"

say "summary (one run, this machine; lease timeout $lease_timeout)"
ratio=$(python3 -c "print(f'{$b_eps / $a_eps:.2f}')" 2>/dev/null || echo "?")
printf '%-34s %12s %10s %10s %12s\n' mode events/s p50_ms p99_ms failover_s
printf '%-34s %12s %10s %10s %12s\n' "single instance (PostgreSQL)" "$a_eps" "$a_p50" "$a_p99" -
printf '%-34s %12s %10s %10s %12s\n' "cluster 3 instances, NATS R=1" "$b_eps" "$b_p50" "$b_p99" -
for r in "${!fo_seconds[@]}"; do
  printf '%-34s %12s %10s %10s %12s   %s\n' "failover run $((r + 1))" - - - "${fo_seconds[$r]}" "${fo_notes[$r]}"
done
echo "cluster/single events/s: $ratio; failures single: $a_fail, cluster: $b_fail"
echo "batch $batch events, $connections connections, ${load_seconds}s per mode"
[ -z "$stop_notes" ] || echo "at the end: $stop_notes"
echo "load before: $load_before"
echo "load after:  $(cat "$work/uptime.after")"
