#!/usr/bin/env bash
# Schema-driven API testing: the real server (with a tokens file) against the committed
# OpenAPI document, every operation, bounded and seeded. Fails on any 5xx, any answer that does
# not match the document, any undocumented status. (The two checks that a schema-valid request
# must be accepted and an invalid one refused are left out: the document cannot express every
# semantic rule of a pipeline spec or an event, whose 400/422 answers are documented.)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi

cargo build --locked --quiet --bin eddy
work=$(mktemp -d "${TMPDIR:-/tmp}/eddy-st.XXXXXX")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(target/debug/eddy token new schemathesis --scopes admin | sed -n 's/^token (shown once): //p')
printf 'schemathesis sha256:%s admin *\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" >"$work/tokens"
EDDY_LISTEN="127.0.0.1:$port" EDDY_DATA_DIR="$work/data" EDDY_TOKENS_FILE="$work/tokens" EDDY_LOG=warn \
  DATABASE_URL="sqlite://$work/data/eddy.db" target/debug/eddy >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
# /readyz answers 503 (logged as an error) until start-up is done: judge the log from here on.
ready_at=$(wc -l <"$work/server.log")
curl -fs -XPOST "http://127.0.0.1:$port/v1/pipelines" -H "Authorization: Bearer $token" \
  -H 'content-type: application/json' --data @examples/clicks.json >/dev/null
"$venv/bin/st" run openapi/openapi.json --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" --checks all \
  --exclude-checks positive_data_acceptance,negative_data_rejection \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 1 --no-color
if grep -qi panicked "$work/server.log" ||
  tail -n +"$((ready_at + 1))" "$work/server.log" | grep -q ERROR; then
  echo "the server logged errors during the schemathesis run:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
