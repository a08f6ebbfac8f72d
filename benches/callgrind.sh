#!/usr/bin/env bash
# CPU instructions per proxied request, counted by callgrind: the same number on every
# run of the same binary, whatever else the machine is doing, so small per-request
# changes can be measured on a shared 2-core machine where wall-clock numbers move by
# 10%. Each proxy runs under valgrind; after a warm-up the counters are zeroed, exactly
# $N requests are sent over $CONNS keep-alive connections, and the counters dumped.
# Instructions per request = all threads' instructions / $N (background timers
# included: a few thousand per second, well under 1% here).
#
#   bash benches/callgrind.sh                      # bare Pingora vs the gateway
#   bash benches/callgrind.sh /tmp/gateway-base    # and other gateway builds, e.g. a
#                                                  # baseline built at another commit
#   KEEP=1 bash benches/callgrind.sh               # keep the profiles for callgrind_annotate
#
# Plain HTTP/1.1, one route, one upstream (nginx `return 200` on loopback), the gateway
# with the config benches/run.sh uses for its `http` scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-4000}
CONNS=${CONNS:-4}

need=()
for pair in valgrind:valgrind nginx:nginx-light python3:python3 curl:curl cmake:cmake; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  $SUDO systemctl stop nginx 2>/dev/null || true
fi
cargo build --release -p gateway -p tollgate-benches --bins

work=$(mktemp -d /tmp/tollgate-callgrind.XXXX)
pids=()
cleanup() {
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

UP=127.0.0.1:18181
PROXY=127.0.0.1:18182
mkdir -p "$work/up"
cat >"$work/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/up/nginx.pid; error_log $work/up/error.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 10000000;
  server { listen $UP; location / { return 200 "ok\n"; } } }
CONF
nginx -c "$work/up/nginx.conf" & pids+=($!)
cat >"$work/gateway.yaml" <<CONF
listeners: [{ name: http, address: "$PROXY" }]
admin: { address: "127.0.0.1:18183" }
server: { threads: 1 }
routes: [{ name: all, upstream: up }]
upstreams: { up: { endpoints: [{ address: "$UP" }] } }
CONF

# Exactly N requests over CONNS keep-alive connections, each response read to its end.
client() {
  python3 - "$PROXY" "$1" "$CONNS" <<'PY'
import asyncio, sys
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2]); conns = int(sys.argv[3])
async def worker(count):
    r, w = await asyncio.open_connection(host, int(port))
    for _ in range(count):
        w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); await w.drain()
        head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        if not head.startswith("http/1.1 200"): raise SystemExit(f"not 200: {head!r}")
        length = [int(l.split(":")[1]) for l in head.split("\r\n") if l.startswith("content-length:")]
        await r.readexactly(length[0] if length else 0)
    w.close()
async def main():
    await asyncio.gather(*(worker(n // conns + (1 if i < n % conns else 0)) for i in range(conns)))
asyncio.run(main())
PY
}

declare -A IR
measure() { # name command...
  local name=$1 pid out
  shift
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" 2>"$work/$name.log" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 300); do curl -sf -o /dev/null "http://$PROXY/" && break; sleep 0.2; done
  client 200
  callgrind_control -z "$pid" >/dev/null 2>&1
  client "$N"
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  out=$(ls "$work/$name.out".* | head -1)
  IR[$name]=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  printf "  %-24s %12d instructions / %d requests = %8.0f per request\n" "$name" "${IR[$name]}" "$N" \
    "$(awk -v i="${IR[$name]}" -v n="$N" 'BEGIN { print i / n }')"
}

echo "callgrind: $N requests over $CONNS connections per proxy"
measure bare-pingora target/release/bare-pingora "$PROXY" "$UP" 1 nosteal
names=(bare-pingora)
RUST_LOG=warn measure gateway target/release/gateway --config "$work/gateway.yaml"
names+=(gateway)
i=0
for bin in "$@"; do
  i=$((i + 1))
  RUST_LOG=warn measure "other-$i" "$bin" --config "$work/gateway.yaml"
  names+=("other-$i")
done

echo
echo "| proxy | instructions per request | vs bare Pingora |"
echo "|---|---:|---:|"
for n in "${names[@]}"; do
  awk -v n="$n" -v i="${IR[$n]}" -v b="${IR[bare-pingora]}" -v r="$N" \
    'BEGIN { printf "| %s | %.0f | %.2f |\n", n, i / r, i / b }'
done
[ -z "${KEEP:-}" ] || echo "profiles kept in $work (callgrind_annotate $work/gateway.out.1)"
