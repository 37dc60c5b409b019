#!/usr/bin/env bash
# The dashboard in a real browser: Debian's Chromium (installed here when missing) driven by
# playwright-core from npm (no browser download), against the real eddy binary, started by the
# tests on free loopback ports with temp data dirs (SQLite), once with a tokens file.
# Screenshots of every view at 1280x800 and 420x900 go to target/ui-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "scripts/ui-test.sh: installing Debian's chromium"
  sudo_=()
  [ "$(id -u)" = 0 ] || sudo_=(sudo)
  "${sudo_[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y --no-install-recommends chromium
fi

(cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)

# The page is embedded in the binary: build it after any change under ui/.
cargo build --locked --bin eddy
export EDDY_BIN="${EDDY_BIN:-$PWD/target/debug/eddy}"

rm -rf target/ui-screenshots
cd tests/ui
node --test --test-concurrency=1 .
