#!/usr/bin/env bash
# The demo: 3 availability zones x 2 demo backends behind one gateway in zone
# us-east-1a (config/examples/demo.yaml). Zones are loopback ranges:
# 127.0.1.x = us-east-1a, 127.0.2.x = us-east-1b, 127.0.3.x = us-east-1c.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null; then
  echo "installing cmake (Pingora needs it to build)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake curl >/dev/null
fi
cargo build -p gateway -p backends-demo --bins
bin=target/debug

logs=$(mktemp -d /tmp/tollgate-demo.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo "stopped; logs in $logs"; }
trap cleanup EXIT INT TERM

for z in 1 2 3; do
  zone="us-east-1$(echo abc | cut -c$z)"
  for i in 1 2; do
    "$bin/backend-demo" --listen "127.0.$z.$i:9001" --zone "$zone" --id "$zone-$i" >"$logs/backend-$z-$i.log" 2>&1 &
    pids+=($!)
  done
done
"$bin/gateway" --config config/examples/demo.yaml >"$logs/gateway.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  curl -sf http://127.0.0.1:9901/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf http://127.0.0.1:9901/readyz >/dev/null || { echo "gateway did not start:"; cat "$logs/gateway.log"; exit 1; }

cat <<TXT

Gateway on http://127.0.0.1:8080 (zone us-east-1a), admin on http://127.0.0.1:9901.
Logs: $logs

Try:
  curl -s localhost:8080/api/hello                       # answered by a us-east-1a backend
  curl -s localhost:9901/upstreams                       # endpoints: zone, health, ejection, in flight
  curl -s localhost:9901/metrics | grep ^gateway_
  curl -s -b session=alice localhost:8080/cart/          # consistent hash on the session cookie

Zone outage (every us-east-1a backend dies; traffic moves to b and c, no failed GETs):
  pkill -f 'backend-demo --listen 127.0.1.'
  for i in \$(seq 20); do curl -s localhost:8080/api/x | grep -o '"zone":"[^"]*"'; done

Rate limit (/api/: 50/s per client, burst 100): 429s with Retry-After past the burst:
  for i in \$(seq 150); do curl -s -o /dev/null -w '%{http_code}\\n' localhost:8080/api/x; done | sort | uniq -c

Fail one health check, inject faults, reload:
  curl -s -XPOST '127.0.2.1:9001/_health?ok=false'
  curl -s -XPOST '127.0.1.2:9001/_fault?status=503&rate=0.5'
  curl -s -XPOST localhost:9901/reload                   # or edit config/examples/demo.yaml

Ctrl-C to stop.
TXT
wait
