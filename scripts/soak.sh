#!/usr/bin/env bash
# Soak test (not in the default suite): a release server under ingest from several clients,
# state queries, long-polls and checkpoints every 10s, for SOAK_SECONDS (default 600). The
# server's RSS is sampled every 10s. Fails when any request failed except by a documented
# limit (503 overload/busy, 507 capacity), or when RSS keeps growing: the peak of the last
# third must stay within 10% of the peak of the middle third.
# Usage: scripts/soak.sh            (SQLite)   DATABASE_URL=postgres://… scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SOAK_SECONDS:-600}
cargo build --release --locked --quiet --bin eddy
work=$(mktemp -d "${TMPDIR:-/tmp}/eddy-soak.XXXXXX")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EDDY_LISTEN="127.0.0.1:$port" EDDY_DATA_DIR="$work/data" EDDY_LOG=warn target/release/eddy >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

( while kill -0 $server 2>/dev/null; do
    awk '/VmRSS/ {print $2}' "/proc/$server/status" 2>/dev/null
    sleep 10
  done ) >"$work/rss_kb" &
sampler=$!

target/release/eddy load --url "http://127.0.0.1:$port" --duration "${seconds}s" --connections 6 \
  --batch 500 --users 200000 --queries --checkpoint-every 10s --server-pid $server | tee "$work/report"
kill $sampler 2>/dev/null || true

echo "RSS samples (MiB, every 10s):"
awk '{printf "%.0f ", $1/1024} END {print ""}' "$work/rss_kb"
python3 - "$work/rss_kb" "$work/report" <<'PY'
import sys
rss = [int(x) for x in open(sys.argv[1]) if x.strip()]
report = open(sys.argv[2]).read()
n = len(rss)
middle, last = rss[n // 3: 2 * n // 3], rss[2 * n // 3:]
ok = True
if middle and last and max(last) > 1.10 * max(middle):
    print(f"RSS still growing: middle third peak {max(middle)//1024} MiB, last third peak {max(last)//1024} MiB")
    ok = False
failures = [l for l in report.splitlines() if l.startswith("failures=")][0].split("=", 1)[1]
bad = [f for f in failures.split(",") if f != "none" and f.split(":")[0] not in ("503", "507")]
if bad:
    print(f"requests failed beyond documented limits: {bad}")
    ok = False
print("soak: " + ("passed" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
