#!/usr/bin/env bash
# Print the path of a promtool: on the PATH, or extracted once from Debian's prometheus
# package into ~/.cache/tollgate/promtool (installing the package would start a
# Prometheus server). Used by deploy/check.sh and .ci/test (the metrics tests run
# `promtool check metrics` on both binaries' /metrics).
set -euo pipefail
if command -v promtool >/dev/null; then command -v promtool; exit 0; fi
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tollgate
PROMTOOL=$CACHE/promtool/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
  echo "extracting promtool from Debian's prometheus package" >&2
  dl=$(mktemp -d)
  (cd "$dl" && { apt-get download prometheus >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  mkdir -p "$CACHE/promtool"
  dpkg-deb --fsys-tarfile "$dl"/prometheus_*.deb | tar -x -C "$CACHE/promtool" ./usr/bin/promtool
  rm -rf "$dl"
fi
echo "$PROMTOOL"
