#!/usr/bin/env bash
# Sidecar mTLS hop benchmark: added latency of app -> sidecar A -> mTLS -> sidecar B
# -> app, against the app called directly and against two nginx doing the same mTLS
# hop (TLS 1.3, client certificates, keep-alive to the peer), in one run.
#
# Fixed request rate with coordinated-omission correction (oha), so p99 means what
# a client waiting in line would see. Resident memory of each proxy after the load.
# A second sidecar pair runs with telemetry on (access log of every outbound call to a
# file, tracing at 1% exported over OTLP/HTTP to the app's nginx standing in for a
# collector): its CPU per request against the plain pair's is the cost of telemetry.
# A gRPC hop: unary calls (gRPC-shaped HTTP/2 POSTs, oha --http2 at the same fixed
# rate) to a real grpcio server (backends-demo/support/grpc_demo.py), through the
# sidecar pair (h2c from the app, h2c to the server) and through an nginx pair doing
# the same (grpc_pass grpcs:// with client certificates), same run.
#
#   bash benches/sidecar.sh                 # 1000 req/s for 10 s, 3 rounds
#   RATE=5000 DURATION=20 bash benches/sidecar.sh
# Writes its table into benches/RESULTS.md (section "Sidecar mTLS hop").
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v python3 >/dev/null || need+=(python3)
command -v cmake >/dev/null || need+=(cmake)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need+=(python3-grpcio)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -p sidecar --bins
cargo build --release -p backends-demo --example mkcerts

work=$(mktemp -d /tmp/tollgate-sidecar-bench.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
target/release/examples/mkcerts "$work/certs" >/dev/null

APP=127.0.0.1:18201          # the app: nginx returning a tiny body
A_OUT=127.0.0.1:18202        # sidecar A, outbound listener the app calls
B_IN=127.0.0.1:18203         # sidecar B, mTLS inbound
NA_OUT=127.0.0.1:18212       # nginx A
NB_IN=127.0.0.1:18213        # nginx B (mTLS)
HA_OUT=127.0.0.1:18222       # HAProxy A
HB_IN=127.0.0.1:18223        # HAProxy B (mTLS)
TA_OUT=127.0.0.1:18232       # sidecar pair with telemetry: A
TB_IN=127.0.0.1:18233        #                              B
GRPC_APP=127.0.0.1:18241     # the gRPC app: grpcio, h2c
GA_OUT=127.0.0.1:18242       # gRPC through the sidecars: A (h2c from the caller)
GB_IN=127.0.0.1:18243        #                             B (to the app as h2c)
GNA_OUT=127.0.0.1:18252      # gRPC through nginx: A (h2c listener, grpc_pass grpcs://)
GNB_IN=127.0.0.1:18253       #                     B (TLS 1.3 + client certs, grpc_pass grpc://)

mkdir -p "$work/app" "$work/na" "$work/nb"
cat >"$work/app/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/app/pid; error_log $work/app/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $APP; location / { return 200 "ok\n"; } } }
CONF
cat >"$work/nb/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nb/pid; error_log $work/nb/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server $APP; keepalive 32; }
  server {
    listen $NB_IN ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate $work/certs/b.crt; ssl_certificate_key $work/certs/b.key;
    ssl_client_certificate $work/certs/ca.crt; ssl_verify_client on;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  } }
CONF
cat >"$work/na/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/na/pid; error_log $work/na/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream peer { server $NB_IN; keepalive 32; }
  server {
    listen $NA_OUT;
    location / {
      proxy_pass https://peer; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;
      proxy_ssl_certificate $work/certs/a.crt; proxy_ssl_certificate_key $work/certs/a.key;
      proxy_ssl_trusted_certificate $work/certs/ca.crt; proxy_ssl_verify on;
      proxy_ssl_name b.bench.local;
    }
  } }
CONF
cat >"$work/a.yaml" <<CONF
identity: { cert: certs/a.crt, key: certs/a.key, trust_bundle: certs/ca.crt }
outbound:
  app:
    listen: "$A_OUT"
    endpoints: ["$B_IN"]
    server_identity: spiffe://bench.local/ns/bench/sa/b
    timeout: 5s
    retry: { attempts: 2 }
    circuit_breaker: {}
    max_concurrent: 1000
admin: { address: 127.0.0.1:18204 }
CONF
cat >"$work/b.yaml" <<CONF
identity: { cert: certs/b.crt, key: certs/b.key, trust_bundle: certs/ca.crt }
inbound:
  listen: "$B_IN"
  forward_to: "$APP"
  allow: [spiffe://bench.local/ns/bench/sa/a]
admin: { address: 127.0.0.1:18205 }
CONF

TELEMETRY="tracing: { otlp_endpoint: \"http://$APP\", sample_ratio: 1% }"
sed -e "s/$A_OUT/$TA_OUT/" -e "s/$B_IN/$TB_IN/" -e "s/18204/18234/" "$work/a.yaml" >"$work/ta.yaml"
sed -e "s/$B_IN/$TB_IN/" -e "s/18205/18235/" "$work/b.yaml" >"$work/tb.yaml"
printf '%s\naccess_log: { enabled: true, path: %s }\n' "$TELEMETRY" "$work/ta-access.log" >>"$work/ta.yaml"
printf '%s\naccess_log: { enabled: true, path: %s }\n' "$TELEMETRY" "$work/tb-access.log" >>"$work/tb.yaml"

# The gRPC hop: sidecars speak h2c to the app; nginx forwards gRPC with grpc_pass.
mkdir -p "$work/gna" "$work/gnb"
sed -e "s/$A_OUT/$GA_OUT/" -e "s/$B_IN/$GB_IN/" -e "s/18204/18244/" "$work/a.yaml" >"$work/ga.yaml"
sed -e "s/$B_IN/$GB_IN/" -e "s/$APP/$GRPC_APP/" -e "s/18205/18245/" "$work/b.yaml" >"$work/gb.yaml"
sed -i "s/^  forward_to: .*/&\n  app_protocol: h2c/" "$work/gb.yaml"
cat >"$work/gnb/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/gnb/pid; error_log $work/gnb/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream grpcapp { server $GRPC_APP; keepalive 32; }
  server {
    listen $GNB_IN ssl http2;
    ssl_protocols TLSv1.3;
    ssl_certificate $work/certs/b.crt; ssl_certificate_key $work/certs/b.key;
    ssl_client_certificate $work/certs/ca.crt; ssl_verify_client on;
    location / { grpc_pass grpc://grpcapp; }
  } }
CONF
cat >"$work/gna/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/gna/pid; error_log $work/gna/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream grpcpeer { server $GNB_IN; keepalive 32; }
  server {
    listen $GNA_OUT http2;
    location / {
      grpc_pass grpcs://grpcpeer;
      grpc_ssl_protocols TLSv1.3; grpc_ssl_session_reuse on;
      grpc_ssl_certificate $work/certs/a.crt; grpc_ssl_certificate_key $work/certs/a.key;
      grpc_ssl_trusted_certificate $work/certs/ca.crt; grpc_ssl_verify on;
      grpc_ssl_name b.bench.local; grpc_ssl_server_name on;
    }
  } }
CONF
# One unary call's request: a gRPC frame (uncompressed, 4-byte length) of raw bytes.
printf '\x00\x00\x00\x00\x04ping' >"$work/grpc-body"

cat "$work/certs/a.crt" "$work/certs/a.key" >"$work/certs/a.pem"
cat "$work/certs/b.crt" "$work/certs/b.key" >"$work/certs/b.pem"
# The same hop with HAProxy: A speaks HTTP/1.1 over mTLS to B, reusing connections.
HA_COMMON="global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always"
cat >"$work/ha.cfg" <<CONF
$HA_COMMON
frontend b_in
  bind $HB_IN ssl crt $work/certs/b.pem ca-file $work/certs/ca.crt verify required ssl-min-ver TLSv1.3
  default_backend app
backend app
  server app $APP
CONF
cat >"$work/ha-a.cfg" <<CONF
$HA_COMMON
frontend a_out
  bind $HA_OUT
  default_backend peer
backend peer
  server b $HB_IN ssl crt $work/certs/a.pem ca-file $work/certs/ca.crt verify required verifyhost b.bench.local sni str(b.bench.local) ssl-min-ver TLSv1.3
CONF

taskset -c 0 nginx -c "$work/app/nginx.conf" & pids+=($!)
taskset -c 1 nginx -c "$work/nb/nginx.conf" & pids+=($!)
taskset -c 1 nginx -c "$work/na/nginx.conf" & pids+=($!)
taskset -c 1 haproxy -f "$work/ha.cfg" -db 2>"$work/hb.log" & pids+=($!); hb_pid=$!
taskset -c 1 haproxy -f "$work/ha-a.cfg" -db 2>"$work/ha.log" & pids+=($!); ha_pid=$!
RUST_LOG=warn taskset -c 1 target/release/sidecar --config "$work/b.yaml" 2>"$work/b.log" & pids+=($!); b_pid=$!
RUST_LOG=warn taskset -c 1 target/release/sidecar --config "$work/a.yaml" 2>"$work/a.log" & pids+=($!); a_pid=$!
RUST_LOG=warn taskset -c 1 target/release/sidecar --config "$work/tb.yaml" 2>"$work/tb.log" & pids+=($!); tb_pid=$!
RUST_LOG=warn taskset -c 1 target/release/sidecar --config "$work/ta.yaml" 2>"$work/ta.log" & pids+=($!); ta_pid=$!
taskset -c 0 /usr/bin/python3 backends-demo/support/grpc_demo.py serve "$GRPC_APP" >"$work/grpc-app.log" 2>&1 & pids+=($!)
taskset -c 1 nginx -c "$work/gnb/nginx.conf" & pids+=($!)
taskset -c 1 nginx -c "$work/gna/nginx.conf" & pids+=($!)
RUST_LOG=warn taskset -c 1 target/release/sidecar --config "$work/gb.yaml" 2>"$work/gb.log" & pids+=($!); gb_pid=$!
RUST_LOG=warn taskset -c 1 target/release/sidecar --config "$work/ga.yaml" 2>"$work/ga.log" & pids+=($!); ga_pid=$!
sleep 1
# Each gRPC path answers a real grpcio client with OK and the echoed message first.
for t in "$GRPC_APP" "$GA_OUT" "$GNA_OUT"; do
  out=$(/usr/bin/python3 backends-demo/support/grpc_demo.py call "$t" unary /demo.Echo/Unary --payload ping 2>&1 || true)
  grep -q '"code": "OK"' <<<"$out" || { echo "gRPC not answering through $t: $out"; tail "$work"/g*.log "$work"/g*/error.log "$work/grpc-app.log"; exit 1; }
done
for u in "http://$APP/" "http://$A_OUT/" "http://$NA_OUT/" "http://$HA_OUT/" "http://$TA_OUT/"; do
  curl -sf "$u" >/dev/null || { echo "not answering: $u"; tail "$work"/*.log "$work"/*/error.log; exit 1; }
done

declare -A P50 P99 P999 CPU
# CPU ticks (utime + stime) of the given processes.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# CPU per request of the given processes under a closed-loop load (wrk -c16, 5 s): at
# a fixed low rate idle wake-ups dominate and the clock's 10 ms ticks are too coarse.
cpu_run() { # name url pids...
  local t0 t1 out n
  t0=$(ticks "${@:3}")
  out=$(taskset -c 0 wrk -t1 -c16 -d5s "$2")
  t1=$(ticks "${@:3}")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  CPU[$1]+="$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }') "
  printf "  %-18s %s requests, %s us CPU/request (both sidecars)\n" "$1" "$n" "$(echo "${CPU[$1]}" | awk '{print $NF}')"
}
measure() { # name url [oha options...]
  local out
  out=$(taskset -c 0 oha -z "${DURATION}s" -q "$RATE" -c "$CONNS" --latency-correction --no-tui --output-format json "${@:3}" "$2" 2>/dev/null)
  read -r p50 p99 p999 ok <<<"$(echo "$out" | python3 -c '
import json,sys
d=json.load(sys.stdin); p=d["latencyPercentiles"]
codes=d.get("statusCodeDistribution",{})
print(p["p50"]*1e6, p["p99"]*1e6, p["p99.9"]*1e6, sum(v for k,v in codes.items() if k=="200"))')"
  printf "  %-14s p50 %8.0f us  p99 %8.0f us  p99.9 %8.0f us  (%s ok)\n" "$1" "$p50" "$p99" "$p999" "$ok"
  P50[$1]+="$p50 "; P99[$1]+="$p99 "; P999[$1]+="$p999 "
}
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS ($RATE req/s, ${DURATION}s)"
  measure direct "http://$APP/"
  measure sidecars "http://$A_OUT/"
  measure sidecars+telemetry "http://$TA_OUT/"
  cpu_run sidecars "http://$A_OUT/" "$a_pid" "$b_pid"
  cpu_run sidecars+telemetry "http://$TA_OUT/" "$ta_pid" "$tb_pid"
  measure nginx-pair "http://$NA_OUT/"
  measure haproxy-pair "http://$HA_OUT/"
  # gRPC: unary calls as HTTP/2 POSTs (h2c, prior knowledge) at the same rate.
  for g in "grpc-direct $GRPC_APP" "grpc-sidecars $GA_OUT" "grpc-nginx-pair $GNA_OUT"; do
    read -r name addr <<<"$g"
    measure "$name" "http://$addr/demo.Echo/Unary" --http2 -m POST -D "$work/grpc-body" \
      -H "content-type: application/grpc" -H "te: trailers"
  done
done
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
nginx_rss() { local w; w=$(pgrep -P "$(cat "$1")" | head -1); rss "$w"; }
row() { # name [baseline]
  local p50 p99 p999 d50 d99
  d50=$(echo "${P50[${2:-direct}]}" | median); d99=$(echo "${P99[${2:-direct}]}" | median)
  p50=$(echo "${P50[$1]}" | median); p99=$(echo "${P99[$1]}" | median); p999=$(echo "${P999[$1]}" | median)
  awk -v n="$1" -v a="$p50" -v b="$p99" -v c="$p999" -v d50="$d50" -v d99="$d99" 'BEGIN {
    printf "| %s | %.0f | %.0f | %.0f | %+.0f | %+.0f |\n", n, a, b, c, a-d50, b-d99 }'
}
# Replace this script's section of RESULTS.md, keep the rest.
before=$(awk '/^## Sidecar mTLS hop/ {exit} {print}' benches/RESULTS.md 2>/dev/null || true)
{
  echo "## Sidecar mTLS hop"
  echo
  echo "Generated by \`bash benches/sidecar.sh\` on $(date -u +%Y-%m-%d): $RATE req/s for ${DURATION}s, $CONNS connections,"
  echo "oha with latency correction, $ROUNDS rounds, medians (microseconds). Proxies pinned to CPU 1, app and load to CPU 0."
  echo "Each sidecar runs 1 worker thread; nginx 1 worker each; HAProxy nbthread 1 each. Every pair: TLS 1.3, client certificates,"
  echo "keep-alive to the peer (sidecars: HTTP/2 between them, SPIFFE id checked both ways; nginx and HAProxy: HTTP/1.1, chain and DNS name checked)."
  echo
  echo "| path | p50 | p99 | p99.9 | added p50 | added p99 |"
  echo "|---|---:|---:|---:|---:|---:|"
  row direct; row sidecars; row nginx-pair; row haproxy-pair; row sidecars+telemetry
  echo
  off=$(echo "${CPU[sidecars]}" | median); on=$(echo "${CPU[sidecars+telemetry]}" | median)
  echo "Telemetry on the hop (sidecars+telemetry: access log of every outbound call, tracing at 1% on both sidecars),"
  echo "closed-loop load (wrk -c16, 5 s per round): CPU of both sidecars per request $on us vs $off us without,"
  echo "$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2fx", a / b }')."
  echo
  echo "gRPC hop: unary calls (/demo.Echo/Unary, 4-byte message) to a Python grpcio server (backends-demo/support/grpc_demo.py,"
  echo "its CPU shared with the load generator), as HTTP/2 POSTs (oha --http2, h2c, $RATE req/s, $CONNS connections, same rounds)."
  echo "Sidecars: h2c from the caller, HTTP/2 over mTLS between them, h2c to the server (app_protocol: h2c). nginx pair:"
  echo "h2c listener, grpc_pass grpcs:// (TLS 1.3, client certificate, name checked) to nginx B, grpc_pass grpc:// to the server."
  echo
  echo "| path | p50 | p99 | p99.9 | added p50 | added p99 |"
  echo "|---|---:|---:|---:|---:|---:|"
  row grpc-direct grpc-direct; row grpc-sidecars grpc-direct; row grpc-nginx-pair grpc-direct
  echo
  echo "Resident memory after the runs: sidecar A $(rss $a_pid) MiB, sidecar B $(rss $b_pid) MiB; nginx A worker $(nginx_rss "$work/na/pid") MiB, nginx B worker $(nginx_rss "$work/nb/pid") MiB; HAProxy A $(rss $ha_pid) MiB, HAProxy B $(rss $hb_pid) MiB."
} > "$work/section.md"
cat "$work/section.md"
{ echo "$before"; echo; cat "$work/section.md"; } > benches/RESULTS.md
