#!/usr/bin/env bash
# The whole check, as CI runs it: format, clippy (-D warnings), and every test against a real
# PostgreSQL and SQLite. When DATABASE_URL is not set, a throwaway PostgreSQL is started
# (initdb into a temp dir, loopback only, a free port) and removed afterwards. The cluster tests
# get a throwaway `nats-server -js` (loopback, a free port, a temp store) unless
# EDDY_TEST_NATS_URL is set; it is stopped and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One EXIT trap for everything this script starts: the throwaway NATS server, and the throwaway
# PostgreSQL (or, on a server we did not start, the test databases).
cleanup() {
  stop_throwaway_nats
  if [ -n "${PG_TMP:-}" ]; then
    stop_throwaway_postgres
  elif [ -n "${DROP_TEST_DATABASES:-}" ]; then
    drop_test_databases
  fi
}
trap cleanup EXIT

start_throwaway_postgres() {
  local initdb bindir
  initdb=$(command -v initdb || true)
  if [ -n "$initdb" ]; then
    bindir=$(dirname "$(readlink -f "$initdb")")
  else
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; then
    echo "scripts/test.sh: DATABASE_URL is not set and no PostgreSQL server binaries (initdb, pg_ctl) were found." >&2
    echo "Install PostgreSQL (e.g. apt-get install postgresql) or set DATABASE_URL=postgres://…" >&2
    exit 1
  fi
  PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/eddy-pg.XXXXXX")
  local port
  port=$(free_port)
  # PostgreSQL refuses to run as root: run its binaries as the postgres user then.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$PG_TMP"
    as=(runuser -u postgres --)
  fi
  PG_CTL=("${as[@]}" "$bindir/pg_ctl" -D "$PG_TMP/data")
  "${as[@]}" "$bindir/initdb" -D "$PG_TMP/data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; echo "scripts/test.sh: initdb failed" >&2; exit 1; }
  "${PG_CTL[@]}" -l "$PG_TMP/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null \
    || { cat "$PG_TMP/server.log" >&2; echo "scripts/test.sh: the throwaway PostgreSQL did not start" >&2; exit 1; }
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "throwaway PostgreSQL on 127.0.0.1:$port (data in $PG_TMP)"
}

stop_throwaway_postgres() {
  "${PG_CTL[@]}" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_TMP"
}

# A throwaway `nats-server -js` for tests/cluster.rs: loopback only, a free port, JetStream
# store in a temp dir; ready once its monitor's /healthz (JetStream included) answers 200.
start_throwaway_nats() {
  local bin
  bin=$(command -v nats-server || true)
  if [ -z "$bin" ] && [ -x /usr/sbin/nats-server ]; then
    bin=/usr/sbin/nats-server
  fi
  if [ -z "$bin" ]; then
    echo "scripts/test.sh: nats-server not found (on PATH or in /usr/sbin): the cluster tests need a real NATS server with JetStream." >&2
    echo "Install it (e.g. apt-get install nats-server, 2.9 or newer) or set EDDY_TEST_NATS_URL=nats://…" >&2
    exit 1
  fi
  NATS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/eddy-nats.XXXXXX")
  local port monitor
  port=$(free_port)
  monitor=$(free_port)
  "$bin" -js -a 127.0.0.1 -p "$port" -m "$monitor" -sd "$NATS_TMP/store" -l "$NATS_TMP/server.log" &
  NATS_PID=$!
  local i
  for i in $(seq 1 600); do
    if ! kill -0 "$NATS_PID" 2>/dev/null; then
      cat "$NATS_TMP/server.log" >&2 || true
      echo "scripts/test.sh: the throwaway nats-server exited at start" >&2
      exit 1
    fi
    if python3 -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$monitor/healthz', timeout=2).status == 200 else 1)" 2>/dev/null; then
      break
    fi
    if [ "$i" = 600 ]; then
      cat "$NATS_TMP/server.log" >&2 || true
      echo "scripts/test.sh: the throwaway nats-server was not healthy within a minute" >&2
      exit 1
    fi
    sleep 0.1
  done
  export EDDY_TEST_NATS_URL="nats://127.0.0.1:$port"
  echo "throwaway nats-server on 127.0.0.1:$port (store in $NATS_TMP)"
}

stop_throwaway_nats() {
  if [ -n "${NATS_PID:-}" ]; then
    kill -9 "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=
  fi
  if [ -n "${NATS_TMP:-}" ]; then
    rm -rf "$NATS_TMP"
  fi
}

say "promtool and prometheus (tests/metrics.rs runs them)"
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "installing Debian's prometheus package"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq prometheus >/dev/null
  fi
fi
promtool --version | head -n 1

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

say "PostgreSQL"
if [ -z "${DATABASE_URL:-}" ]; then
  start_throwaway_postgres
else
  echo "using DATABASE_URL from the environment"
fi

# Tests make one database per server, named eddy_test_*; on a server we did not start, drop
# them afterwards (a throwaway server goes whole).
drop_test_databases() {
  command -v psql >/dev/null 2>&1 || return 0
  for db in $(psql "$DATABASE_URL" -Atc "select datname from pg_database where datname like 'eddy\_test\_%'" 2>/dev/null); do
    psql "$DATABASE_URL" -qc "drop database if exists \"$db\"" >/dev/null 2>&1 || true
  done
}
if [ -z "${PG_TMP:-}" ]; then
  DROP_TEST_DATABASES=1
fi

say "schemathesis (the real server against openapi/openapi.json)"
scripts/schemathesis.sh

say "openapi-python-client (a generated client drives the README walkthrough)"
scripts/openapi-client.sh

say "browser tests (the dashboard in Debian's chromium)"
scripts/ui-test.sh

say "NATS (tests/cluster.rs)"
if [ -z "${EDDY_TEST_NATS_URL:-}" ]; then
  start_throwaway_nats
else
  echo "using EDDY_TEST_NATS_URL from the environment"
fi

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo test --locked --doc
  cargo nextest run --locked --workspace --all-targets --no-fail-fast
else
  cargo test --locked --workspace --all-targets --no-fail-fast
fi
