#!/usr/bin/env bash
# One command, one run: the gateway against nginx, HAProxy, Caddy and a bare Pingora
# proxy (benches/src/bin/bare_pingora.rs: the framework with no features), configured
# alike: one worker thread each pinned to CPU $PROXY_CPU, keep-alive to the upstream,
# access logs off. The upstream (nginx, `return 200`) and the load generators share
# CPU $LOAD_CPU. Scenarios run in alternating rounds; the tables show medians.
#
#   bash benches/run.sh                         # everything, 3 rounds (~15 min)
#   ROUNDS=1 DURATION=5 bash benches/run.sh     # a quick look
#   SCENARIOS="http latency" bash benches/run.sh
#   BASELINE=/tmp/gateway-old bash benches/run.sh   # also an earlier gateway build, as
#                                                   # `gateway-baseline` in the HTTP table
#                                                   # (BASELINE_NOTE="built at abc123" names it)
#
# With the `sidecar` scenario (on by default) it then runs benches/sidecar.sh, which
# rewrites the sidecar section of RESULTS.md: one command regenerates the whole file.
#
# Scenarios: http (HTTP/1.1 keep-alive), https (TLS 1.3 keep-alive), handshake (a new
# TLS handshake per request), h2 (HTTP/2 over TLS, 8 connections x 16 streams),
# features (the gateway with every feature built so far, vs its plain figure),
# telemetry (plain HTTP with the access log on at 100% and tracing at 1% sampling,
# exported to a collector stand-in, vs all off, same rounds),
# waf (plain HTTP with one WAF policy, every managed group, vs none: a GET and a 4 KiB
# JSON POST), auth (plain HTTP with a JWT policy, RS256, the same token on every request:
# the verified-token cache, vs none with the same header), ratelimit (plain HTTP with one rate-limit policy per request, local and in Redis,
# never refusing, vs none, same rounds; and p99 at 1000 req/s with and without Redis),
# latency (fixed rates $RATES with oha, corrected for coordinated omission), idle
# ($IDLE idle keep-alive connections: memory per connection).
#
# CPU time per request = utime+stime of the proxy process (all its threads) from
# /proc over the requests completed: the most stable figure on a shared machine.
# Writes benches/RESULTS.md (keeping the sidecar section benches/sidecar.sh writes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
RATES=${RATES:-"1000 5000"}
IDLE=${IDLE:-5000}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
SCENARIOS=${SCENARIOS:-"http https handshake h2 features telemetry ratelimit waf auth latency idle sidecar"}
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

need=()
for pair in nginx:nginx-light haproxy:haproxy caddy:caddy wrk:wrk h2load:nghttp2-client \
  cmake:cmake taskset:util-linux python3:python3 curl:curl redis-server:redis-server; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts the packaged services; this benchmark runs its own.
  $SUDO systemctl stop nginx haproxy caddy redis-server 2>/dev/null || true
fi
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -p gateway -p tollgate-benches --bins
cargo build --release -p backends-demo --example mkcerts
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n)
MAXCONN=$((FDS / 2 - 100))   # a proxy holds two sockets per proxied connection
if ((IDLE > MAXCONN - 200)); then IDLE=$((MAXCONN - 200)); fi

work=$(mktemp -d /tmp/tollgate-bench.XXXX)
pids=()
# TERM first: nginx's and HAProxy's masters stop their workers on TERM, not on KILL.
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  sleep 0.5
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
target/release/examples/mkcerts "$work/certs" >/dev/null
cat "$work/certs/b.crt" "$work/certs/b.key" >"$work/certs/b.pem"
C=$work/certs

UP=127.0.0.1:18081
declare -A HTTP=([nginx]=127.0.0.1:18082 [haproxy]=127.0.0.1:18088 [caddy]=127.0.0.1:18090
  [bare-pingora]=127.0.0.1:18087 [gateway]=127.0.0.1:18083)
declare -A TLS=([nginx]=127.0.0.1:18085 [haproxy]=127.0.0.1:18089 [caddy]=127.0.0.1:18091
  [gateway]=127.0.0.1:18086)
GWF=127.0.0.1:18092           # the gateway with every feature on
GWT=127.0.0.1:18093           # the plain gateway with access log and tracing on
GWL=127.0.0.1:18099           # the plain gateway with a local rate limit
GWR=127.0.0.1:18100           # the plain gateway with a rate limit in Redis
GWW=127.0.0.1:18105           # the plain gateway with every managed WAF group on
GWA=127.0.0.1:18110           # the plain gateway with a JWT policy
REDIS=127.0.0.1:18102
ALL=(nginx haproxy caddy bare-pingora gateway)
# Rows of the HTTP table: every proxy, and an earlier gateway build when BASELINE names one.
HTTP_ROWS=("${ALL[@]}")
if [ -n "${BASELINE:-}" ]; then HTTP[gateway-baseline]=127.0.0.1:18097; HTTP_ROWS+=(gateway-baseline); fi
TLS_PROXIES=(nginx haproxy caddy gateway)

mkdir -p "$work/up" "$work/ngx"
cat >"$work/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/up/nginx.pid; error_log $work/up/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen $UP backlog=4096; location / { return 200 "ok\n"; } } }
CONF
cat >"$work/ngx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/ngx/nginx.pid; error_log $work/ngx/error.log warn;
worker_rlimit_nofile $FDS;
events { worker_connections $MAXCONN; }
http {
  access_log off; keepalive_requests 10000000; keepalive_timeout 120s;
  upstream up { server $UP; keepalive 64; }
  server {
    listen ${HTTP[nginx]};
    listen ${TLS[nginx]} ssl http2;
    ssl_certificate $C/b.crt; ssl_certificate_key $C/b.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $MAXCONN
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 60s
  timeout http-keep-alive 120s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend f
  bind ${HTTP[haproxy]}
  bind ${TLS[haproxy]} ssl crt $C/b.pem alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  default_backend b
backend b
  server up $UP
CONF
cat >"$work/Caddyfile" <<CONF
{
  admin off
  auto_https off
  default_sni b.bench.local   # clients connecting to an IP send no SNI
}
http://${HTTP[caddy]} {
  bind 127.0.0.1
  reverse_proxy $UP
}
https://${TLS[caddy]} {
  bind 127.0.0.1
  tls $C/b.crt $C/b.key
  reverse_proxy $UP
}
CONF
cat >"$work/gateway.yaml" <<CONF
listeners:
  - { name: http, address: "${HTTP[gateway]}" }
  - name: https
    address: "${TLS[gateway]}"
    tls: { certificates: [{ cert: $C/b.crt, key: $C/b.key }] }
admin: { address: "127.0.0.1:18084" }
server: { threads: 1 }
routes: [{ name: all, upstream: up }]
upstreams: { up: { endpoints: [{ address: "$UP" }] } }
CONF
# Every gateway feature built so far: TLS, route matching among several routes, request
# timeout, retries, HSTS, zone-aware least-request balancing, active health checks,
# outlier detection, trusted proxies, metrics (always on). Rate limits and access logs
# have scenarios of their own, and so has the WAF.
cat >"$work/gateway-features.yaml" <<CONF
zone: z1
region: r1
listeners:
  - name: https
    address: "$GWF"
    trusted_proxies: [10.0.0.0/8]
    tls: { certificates: [{ cert: $C/b.crt, key: $C/b.key }] }
admin: { address: "127.0.0.1:18095" }
server: { threads: 1 }
routes:
  - { name: admin, match: { host: admin.example.com }, upstream: up }
  - { name: api-v2, match: { path_prefix: /v2/, methods: [POST] }, upstream: up }
  - name: all
    upstream: up
    timeouts: { connect: 1s, read: 5s, request: 10s }
    retry: { attempts: 2, on: [connect-failure, 502, 503] }
    hsts: { max_age: 365d }
upstreams:
  up:
    balance: least_request
    zone_aware: { min_local_healthy: 50% }
    endpoints: [{ address: "$UP", zone: z1 }]
    health_check: { path: /, interval: 1s }
    outlier_detection: { consecutive_failures: 5 }
CONF
target/release/gateway validate "$work/gateway-features.yaml" >/dev/null
# The plain gateway plus telemetry: every request logged (a JSON line to a file), traces
# sampled at 1% and exported over OTLP/HTTP to the upstream nginx (it answers 200 to the
# POSTs, like a collector that keeps up).
sed -e "s/${HTTP[gateway]}/$GWT/" -e "s/127.0.0.1:18084/127.0.0.1:18096/" \
  -e "/name: https/,/tls:/d" "$work/gateway.yaml" >"$work/gateway-telemetry.yaml"
cat >>"$work/gateway-telemetry.yaml" <<CONF
access_log: { enabled: true, path: $work/access.log }
tracing: { otlp_endpoint: "http://$UP", sample_ratio: 1% }
CONF
target/release/gateway validate "$work/gateway-telemetry.yaml" >/dev/null
# The plain gateway with one rate-limit policy on its route, per client address, high
# enough never to refuse (the cost of counting, not of refusing): in memory, and in a
# local redis-server on the load generator's CPU.
for store in local redis; do
  port=$([ $store = local ] && echo "$GWL" || echo "$GWR")
  admin=$([ $store = local ] && echo 127.0.0.1:18101 || echo 127.0.0.1:18103)
  sed -e "s/${HTTP[gateway]}/$port/" -e "s/127.0.0.1:18084/$admin/" \
    -e "/name: https/,/tls:/d" "$work/gateway.yaml" |
    python3 -c '
import sys
store = sys.argv[1]
text = sys.stdin.read()
text = text.replace("routes: [{ name: all, upstream: up }]", "routes: [{ name: all, upstream: up, rate_limit: rl }]")
text += "rate_limits:\n  rl: { rate: 10000000/s, key: client_ip, store: %s }\n" % store
if store == "redis":
    text += "redis: { url: \"redis://%s\", timeout: 50ms }\n" % sys.argv[2]
print(text)' "$store" "$REDIS" >"$work/gateway-rl-$store.yaml"
  target/release/gateway validate "$work/gateway-rl-$store.yaml" >/dev/null
done

# The WAF scenario: the plain gateway with one policy, every managed group on.
sed -e "s/${HTTP[gateway]}/$GWW/" -e "s/127.0.0.1:18084/127.0.0.1:18106/" \
  -e "/name: https/,/tls:/d" \
  -e "s/routes: \[{ name: all, upstream: up }\]/routes: [{ name: all, upstream: up, waf: all }]\nwaf: { all: {} }/" \
  "$work/gateway.yaml" >"$work/gateway-waf.yaml"
target/release/gateway validate "$work/gateway-waf.yaml" >/dev/null
# A clean 4 KiB JSON POST (wrk script) and browser-like GET headers, the same for on and off.
python3 - "$work/post-json.lua" <<'PY'
import json, sys
items = []
while True:
    items.append({"id": len(items), "name": "Item number %d" % len(items), "tags": ["red", "large"], "note": "Ships in two days."})
    if len(json.dumps({"order": {"customer": "Ada Lovelace", "items": items}})) > 4096:
        items.pop()
        break
body = json.dumps({"order": {"customer": "Ada Lovelace", "items": items}})
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' % json.dumps(body))
PY
WAF_GET=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
  -H "Accept: text/html,application/xhtml+xml" -H "Accept-Language: en-US,en;q=0.9"
  -H "Cookie: session=3f2a9c; theme=dark")

# The auth scenario: an RS256 key (openssl), its JWKS and one token (python3), and the
# plain gateway with a JWT policy on its route.
openssl genrsa -out "$work/jwt-key.pem" 2048 2>/dev/null
python3 - "$work" <<'PY'
import base64, json, subprocess, sys, time
work = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
mod = subprocess.run(["openssl", "rsa", "-in", work + "/jwt-key.pem", "-noout", "-modulus"],
                     capture_output=True, text=True, check=True).stdout.strip().split("=", 1)[1]
jwk = {"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig", "n": b64(bytes.fromhex(mod)), "e": "AQAB"}
json.dump({"keys": [jwk]}, open(work + "/jwks.json", "w"))
head = b64(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
body = b64(json.dumps({"iss": "https://idp.bench", "aud": "api", "sub": "bench-user", "scope": "read",
                       "exp": int(time.time()) + 86400}).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", work + "/jwt-key.pem"],
                     input=(head + "." + body).encode(), capture_output=True, check=True).stdout
open(work + "/jwt-token", "w").write(head + "." + body + "." + b64(sig))
PY
sed -e "s/${HTTP[gateway]}/$GWA/" -e "s/127.0.0.1:18084/127.0.0.1:18111/" \
  -e "/name: https/,/tls:/d" \
  -e "s/routes: \[{ name: all, upstream: up }\]/routes: [{ name: all, upstream: up, auth: { jwt: bench } }]/" \
  "$work/gateway.yaml" >"$work/gateway-auth.yaml"
cat >>"$work/gateway-auth.yaml" <<YAML
auth:
  jwt:
    bench:
      issuer: https://idp.bench
      audiences: [api]
      required_scopes: [read]
      jwks: { file: $work/jwks.json }
      claims_to_headers: { sub: x-user-id }
YAML
target/release/gateway validate "$work/gateway-auth.yaml" >/dev/null
AUTH_H=(-H "Authorization: Bearer $(cat "$work/jwt-token")")

on() { taskset -c "$1" "${@:2}"; }
# Started with taskset directly (not through a function), so $! is the proxy's pid.
taskset -c "$LOAD_CPU" nginx -c "$work/up/nginx.conf" & pids+=($!)
taskset -c "$PROXY_CPU" nginx -c "$work/ngx/nginx.conf" & pids+=($!)
taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" & pids+=($!)
declare -A PID=([haproxy]=$!)
GOMAXPROCS=1 taskset -c "$PROXY_CPU" caddy run --config "$work/Caddyfile" --adapter caddyfile 2>"$work/caddy.log" & pids+=($!)
PID[caddy]=$!
taskset -c "$PROXY_CPU" target/release/bare-pingora "${HTTP[bare-pingora]}" "$UP" 1 nosteal 2>"$work/bare.log" & pids+=($!)
PID[bare-pingora]=$!
RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway.yaml" 2>"$work/gateway.log" & pids+=($!)
PID[gateway]=$!
if [ -n "${BASELINE:-}" ]; then
  sed -e "s/${HTTP[gateway]}/${HTTP[gateway-baseline]}/" -e "s/127.0.0.1:18084/127.0.0.1:18098/" \
    -e "/name: https/,/tls:/d" "$work/gateway.yaml" >"$work/gateway-baseline.yaml"
  RUST_LOG=warn taskset -c "$PROXY_CPU" "$BASELINE" --config "$work/gateway-baseline.yaml" 2>"$work/gateway-baseline.log" & pids+=($!)
  PID[gateway-baseline]=$!
fi
if has features; then
  RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway-features.yaml" 2>"$work/gateway-features.log" & pids+=($!)
  PID[gateway-features]=$!
fi
if has telemetry; then
  RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway-telemetry.yaml" 2>"$work/gateway-telemetry.log" & pids+=($!)
  PID[gateway-telemetry]=$!
fi
if has ratelimit; then
  taskset -c "$LOAD_CPU" redis-server --bind 127.0.0.1 --port "${REDIS##*:}" --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
  for store in local redis; do
    RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway-rl-$store.yaml" 2>"$work/gateway-rl-$store.log" & pids+=($!)
    PID[gateway-rl-$store]=$!
  done
fi
if has waf; then
  RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway-waf.yaml" 2>"$work/gateway-waf.log" & pids+=($!)
  PID[gateway-waf]=$!
fi
if has auth; then
  RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/gateway --config "$work/gateway-auth.yaml" 2>"$work/gateway-auth.log" & pids+=($!)
  PID[gateway-auth]=$!
fi
for _ in $(seq 50); do
  ok=1
  for p in "${HTTP_ROWS[@]}"; do curl -sf -o /dev/null "http://${HTTP[$p]}/" || ok=0; done
  if has telemetry; then curl -sf -o /dev/null "http://$GWT/" || ok=0; fi
  if has ratelimit; then for a in "$GWL" "$GWR"; do curl -sf -o /dev/null "http://$a/" || ok=0; done; fi
  if has waf; then curl -sf -o /dev/null "http://$GWW/" || ok=0; fi
  if has auth; then curl -sf -o /dev/null "${AUTH_H[@]}" "http://$GWA/" || ok=0; fi
  ((ok)) && break
  sleep 0.2
done
for p in "${HTTP_ROWS[@]}"; do
  curl -sf -o /dev/null "http://${HTTP[$p]}/" || { echo "$p is not answering"; tail -n 20 "$work"/*.log "$work"/*/error.log; exit 1; }
done
PID[nginx]=$(pgrep -P "$(cat "$work/ngx/nginx.pid")" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
declare -A RPS CPU

record() { # key pid-ticks-before pid-ticks-after requests rps
  local us
  us=$(awk -v t=$(($3 - $2)) -v hz="$hz" -v r="$4" 'BEGIN { printf "%.2f", (r > 0) ? t / hz * 1e6 / r : 0 }')
  printf "  %-28s %10.0f req/s %8s us CPU/request\n" "$1" "$5" "$us"
  RPS[$1]+="$5 "; CPU[$1]+="$us "
}
wrk_run() { # key pid url [wrk args]
  local key=$1 pid=$2 url=$3 b a out
  shift 3
  b=$(cpu_ticks "$pid")
  out=$(on "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$@" "$url")
  a=$(cpu_ticks "$pid")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "  $key: $(echo "$out" | grep "Non-2xx\|Socket errors" | tr -s ' ' | tr '\n' ' ')"; fi
  record "$key" "$b" "$a" "$(echo "$out" | awk '/requests in/ {print $1}')" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
}
h2_run() { # key pid url
  local b a out
  b=$(cpu_ticks "$2")
  out=$(on "$LOAD_CPU" h2load -D "$DURATION" -c 8 -m 16 -t 1 "$3" 2>&1)
  a=$(cpu_ticks "$2")
  record "$1" "$b" "$a" "$(echo "$out" | awk '/^requests:/ {print $8}')" "$(echo "$out" | awk '/^finished in/ {print $4}')"
}

declare -A P50 P99 P999
latency_run() { # key url rate
  local out p50 p99 p999
  out=$(on "$LOAD_CPU" oha -z "${DURATION}s" -q "$3" -c 64 --latency-correction --no-tui --output-format json "$2" 2>/dev/null)
  read -r p50 p99 p999 <<<"$(echo "$out" | python3 -c '
import json,sys
d=json.load(sys.stdin); p=d["latencyPercentiles"]
print(p["p50"]*1e6, p["p99"]*1e6, p["p99.9"]*1e6)')"
  printf "  %-28s p50 %7.0f us  p99 %7.0f us  p99.9 %7.0f us\n" "$1" "$p50" "$p99" "$p999"
  P50[$1]+="$p50 "; P99[$1]+="$p99 "; P999[$1]+="$p999 "
}

# Warm up: connection pools, page cache, lazy initialisation.
for p in "${HTTP_ROWS[@]}"; do on "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "http://${HTTP[$p]}/" >/dev/null; done

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS"
  if has http; then for p in "${HTTP_ROWS[@]}"; do wrk_run "http/$p" "${PID[$p]}" "http://${HTTP[$p]}/"; done; fi
  if has https; then for p in "${TLS_PROXIES[@]}"; do wrk_run "https/$p" "${PID[$p]}" "https://${TLS[$p]}/"; done; fi
  if has handshake; then
    for p in "${TLS_PROXIES[@]}"; do wrk_run "handshake/$p" "${PID[$p]}" "https://${TLS[$p]}/" -H "Connection: close"; done
  fi
  if has h2; then for p in "${TLS_PROXIES[@]}"; do h2_run "h2/$p" "${PID[$p]}" "https://${TLS[$p]}/"; done; fi
  if has features; then
    wrk_run "features/gateway-plain-https" "${PID[gateway]}" "https://${TLS[gateway]}/"
    wrk_run "features/gateway-all" "${PID[gateway-features]}" "https://$GWF/" -H "X-Forwarded-For: 203.0.113.9"
  fi
  if has telemetry; then
    wrk_run "telemetry/off" "${PID[gateway]}" "http://${HTTP[gateway]}/"
    wrk_run "telemetry/on" "${PID[gateway-telemetry]}" "http://$GWT/"
  fi
  if has ratelimit; then
    wrk_run "ratelimit/none" "${PID[gateway]}" "http://${HTTP[gateway]}/"
    wrk_run "ratelimit/local" "${PID[gateway-rl-local]}" "http://$GWL/"
    wrk_run "ratelimit/redis" "${PID[gateway-rl-redis]}" "http://$GWR/"
    latency_run "rl-1000/none" "http://${HTTP[gateway]}/" 1000
    latency_run "rl-1000/redis" "http://$GWR/" 1000
  fi
  if has waf; then
    q="/search?q=running+shoes&page=2&sort=price"
    wrk_run "waf/get-off" "${PID[gateway]}" "http://${HTTP[gateway]}$q" "${WAF_GET[@]}"
    wrk_run "waf/get-on" "${PID[gateway-waf]}" "http://$GWW$q" "${WAF_GET[@]}"
    wrk_run "waf/post-off" "${PID[gateway]}" "http://${HTTP[gateway]}/api/orders" -s "$work/post-json.lua"
    wrk_run "waf/post-on" "${PID[gateway-waf]}" "http://$GWW/api/orders" -s "$work/post-json.lua"
  fi
  if has auth; then
    wrk_run "auth/off" "${PID[gateway]}" "http://${HTTP[gateway]}/" "${AUTH_H[@]}"
    wrk_run "auth/on" "${PID[gateway-auth]}" "http://$GWA/" "${AUTH_H[@]}"
  fi
  if has latency; then
    for rate in $RATES; do for p in "${ALL[@]}"; do latency_run "$rate/$p" "http://${HTTP[$p]}/" "$rate"; done; done
  fi
done

declare -A IDLE_KIB IDLE_BEFORE IDLE_AFTER
if has idle; then
  echo "idle connections: $IDLE per proxy"
  for p in "${ALL[@]}"; do
    before=$(rss_kb "${PID[$p]}")
    # Open the connections, send one request on each, keep them open while we read RSS.
    after=$(on "$LOAD_CPU" python3 - "${HTTP[$p]}" "$IDLE" "${PID[$p]}" <<'PY'
import asyncio, sys
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2]); pid = sys.argv[3]
failed = 0
async def one(conns):
    global failed
    r, w = await asyncio.open_connection(host, int(port))
    w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); await w.drain()
    head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    length = [int(l.split(":")[1]) for l in head.split("\r\n") if l.startswith("content-length:")]
    await r.readexactly(length[0] if length else 0)
    if not head.startswith("http/1.1 200"): failed += 1
    conns.append(w)
async def main():
    conns, sem = [], asyncio.Semaphore(50)
    async def guarded():
        async with sem: await one(conns)
    await asyncio.gather(*(guarded() for _ in range(n)))
    await asyncio.sleep(1)
    rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
    if failed: print(f"{failed} of {n} requests were not answered 200", file=sys.stderr)
    print(rss)
    for w in conns: w.close()
asyncio.run(main())
PY
)
    IDLE_BEFORE[$p]=$before; IDLE_AFTER[$p]=$after
    IDLE_KIB[$p]=$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN { printf "%.1f", (a - b) / n }')
    echo "  $p: RSS $((before / 1024)) -> $((after / 1024)) MiB, ${IDLE_KIB[$p]} KiB per connection"
    sleep 2
  done
fi

# Keep the raw measurements next to the logs, in case the report needs a second look.
declare -p RPS CPU P50 P99 P999 IDLE_KIB IDLE_BEFORE IDLE_AFTER PID >"$work/raw.sh"
echo "raw measurements: $work/raw.sh"

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END { if (NR == 0) print 0; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
med() { echo "${1:-}" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
throughput_table() { # scenario proxies...
  local s=$1 n b p
  shift
  n=$(med "${CPU[$s/nginx]:-}"); b=$(med "${CPU[$s/bare-pingora]:-}")
  echo "| proxy | req/s | CPU us/request | CPU vs nginx | CPU vs bare Pingora |"
  echo "|---|---:|---:|---:|---:|"
  for p in "$@"; do
    local c; c=$(med "${CPU[$s/$p]:-}")
    local vb="-"; [ -n "${CPU[$s/bare-pingora]:-}" ] && vb=$(ratio "$c" "$b")
    printf "| %s | %.0f | %.2f | %s | %s |\n" "$p" "$(med "${RPS[$s/$p]:-}")" "$c" "$(ratio "$c" "$n")" "$vb"
  done
}
rssmib() { awk -v k="$(rss_kb "$1")" 'BEGIN { printf "%.1f", k / 1024 }'; }
# Sections other scripts write (callgrind.sh, sidecar.sh) are kept as they are.
others=$(awk '/^## (Instructions per request|Sidecar mTLS hop)/ {keep=1} keep' benches/RESULTS.md 2>/dev/null || true)
{
  echo "# Benchmark results"
  echo
  echo "Generated by \`bash benches/run.sh\` on $(date -u +%Y-%m-%d) (scenarios: $SCENARIOS; $ROUNDS alternating rounds of ${DURATION}s, medians)."
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)."
  echo "Versions: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), Caddy $(caddy version | awk '{print $1}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $(h2load --version | head -1), $(oha --version);"
  echo "gateway and bare Pingora at $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (Pingora 0.9, release profile: fat LTO, 1 codegen unit, mimalloc, no work stealing)."
  echo
  echo "Each proxy: one worker thread pinned to CPU $PROXY_CPU (nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`, Caddy \`GOMAXPROCS=1\`,"
  echo "Pingora \`threads: 1\`), keep-alive to the upstream, X-Forwarded-For added, access logs off. Upstream (nginx \`return 200\`, 3-byte body)"
  echo "and load generators on CPU $LOAD_CPU. CPU time per request = the proxy process's utime+stime (all threads) / requests completed."
  echo "TLS: ECDSA P-256 certificate, TLS 1.3 (wrk, h2load). Bare Pingora: benches/src/bin/bare_pingora.rs, a \`ProxyHttp\` that only picks the upstream."
  for s in http https handshake h2; do
    has "$s" || continue
    echo
    case $s in
      http) echo "## HTTP/1.1 keep-alive (wrk -c$CONNS)"; echo; throughput_table http "${HTTP_ROWS[@]}"
        if [ -n "${BASELINE:-}" ]; then echo; echo "gateway-baseline: ${BASELINE_NOTE:-\`$BASELINE\`}, measured in the same rounds."; fi ;;
      https) echo "## HTTPS keep-alive (wrk -c$CONNS, TLS 1.3)"; echo; throughput_table https "${TLS_PROXIES[@]}" ;;
      handshake) echo "## A new TLS handshake per request (wrk -c$CONNS, \`Connection: close\`): req/s = handshakes/s"; echo; throughput_table handshake "${TLS_PROXIES[@]}" ;;
      h2) echo "## HTTP/2 over TLS, multiplexed (h2load -c8 -m16)"; echo; throughput_table h2 "${TLS_PROXIES[@]}" ;;
    esac
  done
  if has features; then
    plain=$(med "${CPU[http/gateway]:-}"); tls=$(med "${CPU[features/gateway-plain-https]}"); all=$(med "${CPU[features/gateway-all]}")
    echo
    echo "## The gateway with every feature built so far"
    echo
    echo "TLS termination, 3 routes, request timeout, retries, HSTS, zone-aware least-request balancing, active health checks,"
    echo "outlier detection, trusted proxies (client sends X-Forwarded-For), metrics. Not in this configuration: rate limits and access logs (their own tables below); not built yet: WAF."
    echo
    echo "| gateway | req/s | CPU us/request | vs plain HTTP |"
    echo "|---|---:|---:|---:|"
    printf "| plain HTTP | %.0f | %.2f | 1.00 |\n" "$(med "${RPS[http/gateway]:-}")" "$plain"
    printf "| plain HTTPS | %.0f | %.2f | %s |\n" "$(med "${RPS[features/gateway-plain-https]}")" "$tls" "$(ratio "$tls" "$plain")"
    printf "| every feature (HTTPS) | %.0f | %.2f | %s |\n" "$(med "${RPS[features/gateway-all]}")" "$all" "$(ratio "$all" "$plain")"
  fi
  if has telemetry; then
    off=$(med "${CPU[telemetry/off]}"); on=$(med "${CPU[telemetry/on]}")
    lines=$(wc -l <"$work/access.log" 2>/dev/null || echo 0)
    echo
    echo "## Telemetry cost (plain HTTP keep-alive, wrk -c$CONNS)"
    echo
    echo "Access log on for every request (one JSON line each, to a file: $lines lines written), tracing at 1% sampling"
    echo "exported over OTLP/HTTP (to the upstream nginx standing in for a collector), vs both off, in the same rounds."
    echo
    echo "| gateway | req/s | CPU us/request | vs off |"
    echo "|---|---:|---:|---:|"
    printf "| telemetry off | %.0f | %.2f | 1.00 |\n" "$(med "${RPS[telemetry/off]}")" "$off"
    printf "| access log 100%% + tracing 1%% | %.0f | %.2f | %s |\n" "$(med "${RPS[telemetry/on]}")" "$on" "$(ratio "$on" "$off")"
  fi
  if has ratelimit; then
    none=$(med "${CPU[ratelimit/none]}"); loc=$(med "${CPU[ratelimit/local]}"); red=$(med "${CPU[ratelimit/redis]}")
    echo
    echo "## Rate-limit cost (plain HTTP keep-alive, wrk -c$CONNS)"
    echo
    echo "One policy per request keyed on the client address, never refusing: counted in memory, or in a"
    echo "redis-server on the load generator's CPU (one Lua call per request), vs no policy, in the same rounds."
    echo
    echo "| gateway | req/s | CPU us/request | vs none |"
    echo "|---|---:|---:|---:|"
    printf "| no rate limit | %.0f | %.2f | 1.00 |\n" "$(med "${RPS[ratelimit/none]}")" "$none"
    printf "| local limit | %.0f | %.2f | %s |\n" "$(med "${RPS[ratelimit/local]}")" "$loc" "$(ratio "$loc" "$none")"
    printf "| Redis limit | %.0f | %.2f | %s |\n" "$(med "${RPS[ratelimit/redis]}")" "$red" "$(ratio "$red" "$none")"
    echo
    printf "At 1000 req/s (oha -c64, corrected): p50 %.0f / p99 %.0f us without a limit, %.0f / %.0f us with the Redis limit: the Redis path adds %.0f us at p99.\n" \
      "$(med "${P50[rl-1000/none]}")" "$(med "${P99[rl-1000/none]}")" "$(med "${P50[rl-1000/redis]}")" "$(med "${P99[rl-1000/redis]}")" \
      "$(awk -v a="$(med "${P99[rl-1000/redis]}")" -v b="$(med "${P99[rl-1000/none]}")" 'BEGIN { print a - b }')"
  fi
  if has waf; then
    goff=$(med "${CPU[waf/get-off]}"); gon=$(med "${CPU[waf/get-on]}")
    poff=$(med "${CPU[waf/post-off]}"); pon=$(med "${CPU[waf/post-on]}")
    echo
    echo "## WAF cost (plain HTTP keep-alive, wrk -c$CONNS)"
    echo
    echo "The gateway with one WAF policy (every managed group, paranoia 1) vs without, in the same rounds:"
    echo "a browser-like GET with a 3-argument query and a cookie, and a clean 4 KiB JSON POST (read"
    echo "before the upstream is contacted and inspected key by key). Goal: on <= 1.3x off."
    echo
    echo "| request | WAF | req/s | CPU us/request | vs off |"
    echo "|---|---|---:|---:|---:|"
    printf "| GET | off | %.0f | %.2f | 1.00 |\n" "$(med "${RPS[waf/get-off]}")" "$goff"
    printf "| GET | on | %.0f | %.2f | %s |\n" "$(med "${RPS[waf/get-on]}")" "$gon" "$(ratio "$gon" "$goff")"
    printf "| 4 KiB JSON POST | off | %.0f | %.2f | 1.00 |\n" "$(med "${RPS[waf/post-off]}")" "$poff"
    printf "| 4 KiB JSON POST | on | %.0f | %.2f | %s |\n" "$(med "${RPS[waf/post-on]}")" "$pon" "$(ratio "$pon" "$poff")"
  fi
  if has auth; then
    aoff=$(med "${CPU[auth/off]}"); aon=$(med "${CPU[auth/on]}")
    echo
    echo "## JWT verification cost (plain HTTP keep-alive, wrk -c$CONNS)"
    echo
    echo "The gateway with a JWT policy (RS256 key from a JWKS file; issuer, audience and scope checked;"
    echo "sub copied to a header) vs without, the same Authorization header on every request, in the same"
    echo "rounds. Every request after the first is answered from the verified-token cache. Goal: under"
    echo "10 us added per request."
    echo
    echo "| JWT policy | req/s | CPU us/request | vs off | added us/request |"
    echo "|---|---:|---:|---:|---:|"
    printf "| off | %.0f | %.2f | 1.00 | |\n" "$(med "${RPS[auth/off]}")" "$aoff"
    printf "| on | %.0f | %.2f | %s | %.2f |\n" "$(med "${RPS[auth/on]}")" "$aon" "$(ratio "$aon" "$aoff")" \
      "$(awk -v a="$aon" -v b="$aoff" 'BEGIN { print a - b }')"
  fi
  if has latency; then
    echo
    echo "## Latency at fixed rates (HTTP/1.1, oha -c64 with latency correction, microseconds)"
    echo
    header="| proxy |"; sep="|---|"
    for rate in $RATES; do header+=" $rate/s p50 | p99 | p99.9 |"; sep+="---:|---:|---:|"; done
    echo "$header"; echo "$sep"
    for p in "${ALL[@]}"; do
      line="| $p |"
      for rate in $RATES; do
        line+=$(printf " %.0f | %.0f | %.0f |" "$(med "${P50[$rate/$p]:-}")" "$(med "${P99[$rate/$p]:-}")" "$(med "${P999[$rate/$p]:-}")")
      done
      echo "$line"
    done
  fi
  if has idle; then
    echo
    echo "## Memory: $IDLE idle keep-alive connections (one request each, then idle)"
    echo
    echo "| proxy | RSS before | RSS with the connections | per connection |"
    echo "|---|---:|---:|---:|"
    for p in "${ALL[@]}"; do
      printf "| %s | %.1f MiB | %.1f MiB | %s KiB |\n" "$p" "$(awk -v k="${IDLE_BEFORE[$p]}" 'BEGIN { print k / 1024 }')" "$(awk -v k="${IDLE_AFTER[$p]}" 'BEGIN { print k / 1024 }')" "${IDLE_KIB[$p]}"
    done
  fi
  if has http && has latency && has features; then
    g=$(med "${CPU[http/gateway]}"); n=$(med "${CPU[http/nginx]}"); b=$(med "${CPU[http/bare-pingora]}")
    f=$(med "${CPU[features/gateway-all]}")
    last_rate=${RATES##* }
    gp=$(med "${P99[$last_rate/gateway]}"); np=$(med "${P99[$last_rate/nginx]}")
    verdict() { awk -v r="$1" -v max="$2" 'BEGIN { print (r <= max) ? "yes" : "no" }'; }
    echo
    echo "## Goals"
    echo
    echo "| goal | measured | met |"
    echo "|---|---:|---|"
    echo "| plain HTTP: gateway CPU/request <= nginx | $(ratio "$g" "$n")x | $(verdict "$(ratio "$g" "$n")" 1) |"
    echo "| plain HTTP: within 10% of bare Pingora | $(ratio "$g" "$b")x | $(verdict "$(ratio "$g" "$b")" 1.10) |"
    echo "| every feature: CPU/request <= 1.5x plain | $(ratio "$f" "$g")x | $(verdict "$(ratio "$f" "$g")" 1.5) |"
    echo "| p99 at $last_rate req/s <= nginx | $(ratio "$gp" "$np")x ($(printf %.0f "$gp") vs $(printf %.0f "$np") us) | $(verdict "$(ratio "$gp" "$np")" 1) |"
  fi
  if has telemetry; then
    t=$(ratio "$(med "${CPU[telemetry/on]}")" "$(med "${CPU[telemetry/off]}")")
    echo "| access log (every request) + tracing 1%: CPU/request <= 1.05x off | ${t}x | $(verdict "$t" 1.05) |"
  fi
  if has auth; then
    added=$(awk -v a="$(med "${CPU[auth/on]}")" -v b="$(med "${CPU[auth/off]}")" 'BEGIN { printf "%.2f", a - b }')
    echo "| JWT policy, a client's repeated token: added CPU/request < 10 us | $added us | $(awk -v a="$added" 'BEGIN { print (a < 10) ? "yes" : "no" }') |"
  fi
  echo
  echo "Resident memory at the end: nginx worker $(rssmib "${PID[nginx]}") MiB, HAProxy $(rssmib "${PID[haproxy]}") MiB, Caddy $(rssmib "${PID[caddy]}") MiB, bare Pingora $(rssmib "${PID[bare-pingora]}") MiB, gateway $(rssmib "${PID[gateway]}") MiB."
  if [ -n "$others" ]; then echo; echo "$others"; fi
} > benches/RESULTS.md.new
mv benches/RESULTS.md.new benches/RESULTS.md
cat benches/RESULTS.md
if has sidecar; then
  # Stop this run's proxies first: the sidecar benchmark uses the same pinned CPUs.
  cleanup
  trap - EXIT
  bash benches/sidecar.sh
fi
