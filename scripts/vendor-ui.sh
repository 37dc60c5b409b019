#!/usr/bin/env bash
# Reproduces ui/vendor/ from the npm registry: uPlot's ES module build, its stylesheet and its
# licence, at the pinned version. `npm pack` checks the tarball against the registry's
# integrity hash; the SHA-256 of each file is then compared with ui/vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32
out=ui/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null && tar xzf "uplot-$UPLOT_VERSION.tgz")
mkdir -p "$out"
cp "$tmp/package/dist/uPlot.esm.js" "$out/uPlot.esm.js"
cp "$tmp/package/dist/uPlot.min.css" "$out/uPlot.min.css"
cp "$tmp/package/LICENSE" "$out/LICENSE"

status=0
for f in uPlot.esm.js uPlot.min.css LICENSE; do
  sum=$(sha256sum "$out/$f" | cut -d' ' -f1)
  if grep -q "$sum" "$out/README.md" 2>/dev/null; then
    echo "$f: $sum (as recorded)"
  else
    echo "$f: $sum (NOT the SHA-256 recorded in $out/README.md)" >&2
    status=1
  fi
done
exit $status
