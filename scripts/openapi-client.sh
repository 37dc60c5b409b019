#!/usr/bin/env bash
# The OpenAPI document as generators see it: openapi-spec-validator must accept
# openapi/openapi.json, openapi-python-client must generate a client from it, and that client
# must drive the README's walkthrough (tests/openapi_client/walkthrough.py) against the real
# server (debug binary, SQLite, a temp data dir, a free loopback port). Any failure fails the
# run. Tools come from PyPI, pinned, into target/openapi-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/openapi-venv
if [ ! -x "$venv/bin/openapi-python-client" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    openapi-python-client==0.29.1 openapi-spec-validator==0.9.0
fi

"$venv/bin/openapi-spec-validator" openapi/openapi.json

cargo build --locked --quiet --bin eddy
work=$(mktemp -d "${TMPDIR:-/tmp}/eddy-client.XXXXXX")
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The generator supports no NDJSON media type of its own; its documented override sends it as
# a raw body (the document types it as a binary string for this).
cat >"$work/generator.yaml" <<'EOF'
package_name_override: eddy_client
content_type_overrides:
  application/x-ndjson: application/octet-stream
EOF
"$venv/bin/openapi-python-client" generate --path openapi/openapi.json --meta none \
  --config "$work/generator.yaml" --output-path "$work/eddy_client" >"$work/generate.log" 2>&1 \
  || { cat "$work/generate.log" >&2; echo "openapi-client: generation failed" >&2; exit 1; }
# Warnings mean a part of the document the generator skipped: none may be.
if grep -q "WARNING" "$work/generate.log"; then
  cat "$work/generate.log" >&2
  echo "openapi-client: the generator skipped part of the document" >&2
  exit 1
fi
# openapi-python-client 0.29.1 dispatches a body of several media types with
# isinstance(body, Event | list[Event]), which Python refuses (a parameterized generic). The
# document is right; patch that one line of the generated code, and fail if it is not found,
# so that a fixed generator is noticed.
events="$work/eddy_client/api/events/post_events.py"
grep -q 'isinstance(body, Event | list\[Event\])' "$events" \
  || { echo "openapi-client: the generator's union dispatch changed; drop the patch" >&2; exit 1; }
sed -i 's/isinstance(body, Event | list\[Event\])/isinstance(body, (Event, list))/' "$events"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EDDY_LISTEN="127.0.0.1:$port" EDDY_DATA_DIR="$work/data" EDDY_LOG=warn \
  DATABASE_URL="sqlite://$work/data/eddy.db" target/debug/eddy >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null \
  || { cat "$work/server.log" >&2; echo "openapi-client: the server did not get ready" >&2; exit 1; }

PYTHONPATH="$work" "$venv/bin/python" tests/openapi_client/walkthrough.py "http://127.0.0.1:$port" \
  || { cat "$work/server.log" >&2; echo "openapi-client: the walkthrough failed" >&2; exit 1; }
if grep -qi panicked "$work/server.log"; then
  cat "$work/server.log" >&2
  exit 1
fi
