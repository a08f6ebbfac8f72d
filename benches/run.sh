#!/usr/bin/env bash
# Load benchmark: the gateway vs nginx as plain HTTP/1.1 reverse proxies, same run,
# same machine, alternating rounds. Each proxy gets one worker pinned to one CPU; the
# upstream (nginx returning a tiny body) and wrk share the other CPU.
#
# Reports requests/s and, more stable on a shared machine, CPU time per request of the
# proxy process (utime+stime from /proc over the requests wrk completed).
#
#   bash benches/run.sh            # 3 rounds of 10 s each
#   ROUNDS=5 DURATION=20 bash benches/run.sh
#
# Writes benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v cmake >/dev/null || need+=(cmake)
command -v taskset >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p gateway --bins
cargo build --release -p backends-demo --example mkcerts

work=$(mktemp -d /tmp/tollgate-bench.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

UP=127.0.0.1:18081
NGX=127.0.0.1:18082
GW=127.0.0.1:18083
GW_ADMIN=127.0.0.1:18084
NGX_TLS=127.0.0.1:18085
GW_TLS=127.0.0.1:18086
target/release/examples/mkcerts "$work/certs" >/dev/null

mkdir -p "$work/up" "$work/ngx"
cat >"$work/up/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/up/nginx.pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $UP; location / { return 200 "ok\n"; } }
}
CONF
cat >"$work/ngx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server $UP; keepalive 64; }
  server {
    listen $NGX;
    listen $NGX_TLS ssl http2;
    ssl_certificate $work/certs/b.crt; ssl_certificate_key $work/certs/b.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
cat >"$work/gateway.yaml" <<CONF
listeners:
  - { name: http, address: "$GW" }
  - name: https
    address: "$GW_TLS"
    tls: { certificates: [{ cert: $work/certs/b.crt, key: $work/certs/b.key }] }
admin: { address: "$GW_ADMIN" }
server: { threads: 1 }
routes: [{ name: all, upstream: up }]
upstreams: { up: { endpoints: [{ address: "$UP" }] } }
CONF

taskset -c "$LOAD_CPU" nginx -c "$work/up/nginx.conf" & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/ngx/nginx.conf" & pids+=($!)
RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway.yaml" 2>"$work/gateway.log" & pids+=($!)
sleep 1
curl -sf "http://$NGX/" >/dev/null && curl -sf "http://$GW/" >/dev/null || { echo "proxies did not start"; cat "$work"/*/error.log "$work/gateway.log"; exit 1; }

# The nginx worker is the child of the master we started.
ngx_master=$(cat "$work/ngx/nginx.pid")
ngx_worker=$(pgrep -P "$ngx_master" | head -1)
gw_pid=$(pgrep -f "target/release/gateway --config $work/gateway.yaml" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

declare -A RPS CPU
run() { # name pid url [wrk args...]
  local name=$1 pid=$2 url=$3 before after out reqs
  shift 3
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "$url")
  after=$(cpu_ticks "$pid")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local errors; errors=$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  # CPU microseconds per request.
  local us; us=$(awk -v t=$((after - before)) -v hz="$hz" -v r="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / r }')
  echo "  $name: $rps req/s, $us us CPU/request ${errors}"
  RPS[$name]+="$rps "
  CPU[$name]+="$us "
}

# Warm up both (connection pools, page cache).
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://$NGX/" >/dev/null
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://$GW/" >/dev/null
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS"
  run nginx "$ngx_worker" "http://$NGX/"
  run gateway "$gw_pid" "http://$GW/"
  run nginx-https "$ngx_worker" "https://$NGX_TLS/"
  run gateway-https "$gw_pid" "https://$GW_TLS/"
  run nginx-handshake "$ngx_worker" "https://$NGX_TLS/" -H "Connection: close"
  run gateway-handshake "$gw_pid" "https://$GW_TLS/" -H "Connection: close"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
med() { echo "$1" | median; }
n_rss=$(rss_kb "$ngx_worker"); g_rss=$(rss_kb "$gw_pid")
row() { # label nginx-name gateway-name
  local nr gr nc gc
  nr=$(med "${RPS[$2]}"); gr=$(med "${RPS[$3]}"); nc=$(med "${CPU[$2]}"); gc=$(med "${CPU[$3]}")
  awk -v l="$1" -v nr="$nr" -v gr="$gr" -v nc="$nc" -v gc="$gc" 'BEGIN {
    printf "| %s | %.0f | %.0f | **%.2f** | %.2f | %.2f | **%.2f** |\n", l, nr, gr, gr / nr, nc, gc, gc / nc }'
}
# Keep the sections other scripts write (benches/sidecar.sh).
others=$(awk '/^## Sidecar mTLS hop/ {keep=1} keep' benches/RESULTS.md 2>/dev/null || true)
{
  echo "# Benchmark results"
  echo
  echo "Generated by \`bash benches/run.sh\` on $(date -u +%Y-%m-%d)."
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME")."
  echo "Versions: $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), gateway $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (Pingora 0.9, release profile: fat LTO, 1 codegen unit)."
  echo
  echo "## Gateway vs nginx as a reverse proxy, tiny responses"
  echo
  echo "One proxy worker pinned to CPU $PROXY_CPU; upstream (nginx, \`return 200\`) and wrk (-t1 -c$CONNS, ${DURATION}s) on CPU $LOAD_CPU;"
  echo "$ROUNDS alternating rounds, medians. CPU time per request = proxy process utime+stime / requests completed."
  echo
  echo "| scenario | nginx req/s | gateway req/s | gateway/nginx | nginx CPU us/req | gateway CPU us/req | gateway/nginx |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  row "HTTP/1.1 keep-alive" nginx gateway
  row "HTTPS keep-alive (TLS 1.3)" nginx-https gateway-https
  row "HTTPS, new TLS handshake per request" nginx-handshake gateway-handshake
  echo
  echo "Resident memory after the runs: nginx worker $((n_rss / 1024)) MiB, gateway $((g_rss / 1024)) MiB."
  echo 'The handshake row is handshakes per second (wrk with `Connection: close`; ECDSA P-256 certificate).' 
  if [ -n "$others" ]; then echo; echo "$others"; fi
} > benches/RESULTS.md.new
mv benches/RESULTS.md.new benches/RESULTS.md
cat benches/RESULTS.md
