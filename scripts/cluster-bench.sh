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
# What it shares with scripts/partition-bench.sh is in scripts/bench-lib.sh.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

load_seconds=${BENCH_SECONDS:-20}
batch=${BENCH_BATCH:-1000}
connections=${BENCH_CONNECTIONS:-9}
runs=${BENCH_FAILOVER_RUNS:-3}
failover_users=${BENCH_FAILOVER_USERS:-1500000}
failover_keys=${BENCH_FAILOVER_KEYS:-1000000}
after_events_wanted=${BENCH_AFTER_EVENTS:-100000}
lease_timeout=${BENCH_LEASE_TIMEOUT:-5s}

bench_name=cluster-bench
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

machine_before
build_eddy

say "PostgreSQL: database $db"
create_db

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

start_nats

# Three cluster instances n0..n2.
declare -a node_port=() node_url=() node_pid=() node_down=()
start_node() {
  local i=$1
  start_member "n$i" "${node_port[$i]}" "n$i" "${node_url[$i]}" "bench$$"
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
  load_until "$name" "$failover_users" "$failover_keys" "$work/c$r-load.txt" "${node_url[$probe]}" "$urls"
  keys=$LOAD_KEYS
  # The generator is paused (SIGSTOP) while the checkpoint is written, so that the events
  # after it are a measured few (it continues in event time on SIGCONT, nothing late).
  kill -STOP "$LOAD_PID"
  leader_before=$(leader_of "${node_url[$probe]}" "$name")
  manual_checkpoint "${node_url[$probe]}" "$name"
  wedged=""
  revive_wedged
  # More events after the checkpoint, at least $after_events_wanted: the takeover replays them.
  kill -CONT "$LOAD_PID"
  await_after_events "${node_url[$probe]}" "$name"
  stop_load
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
stop_nats
machine_after

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
print_load
