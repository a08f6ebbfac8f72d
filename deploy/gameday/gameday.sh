#!/usr/bin/env bash
# Game day: a three-zone deployment on one machine, a fault schedule, an availability report.
#
#   bash deploy/gameday/gameday.sh                      up + run the default schedule + report + down
#   bash deploy/gameday/gameday.sh all SCHEDULE [DIR]   the same with another schedule (and run dir)
#   bash deploy/gameday/gameday.sh up [DIR]             bring the topology up in DIR (prints DIR)
#   bash deploy/gameday/gameday.sh run DIR [SCHEDULE]   run a schedule against it, write the report
#   bash deploy/gameday/gameday.sh down [DIR]           stop DIR's processes and remove its namespaces;
#                                                       without DIR: every tg-* namespace left over
#   GAMEDAY_LOOPBACK=1 ...                              the loopback fallback even as root
#   bash deploy/gameday/gameday.sh hook DIR ACTION ...  the fault hooks `gameday run` calls (below)
#
# Topology (as root): network namespaces <prefix>-region (a bridge), -a, -b, -c (zones),
# -redis and -client, each zone joined to the region bridge by a veth pair, addresses
# 10.88.0.0/24 that exist only inside these namespaces. Each zone runs two backend-demo
# processes, each with a sidecar in front (inbound mTLS), one gateway and one "edge"
# sidecar next to the gateway (the gateway's /dep/ route goes through it, over mTLS, to
# the backends' sidecars). Without CAP_NET_ADMIN the same processes run on loopback
# ranges (127.0.1.x = zone a, ...) and network cuts are skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
script="$here/gameday.sh"
# TOLLGATE_BIN: where the binaries are (the integration test passes its own; then nothing
# is built here). Otherwise `all` and `up` build them (debug) first.
bin="${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug}"
zones=(a b c)

die() { echo "gameday: $*" >&2; exit 1; }

# ---- addresses -------------------------------------------------------------------------

zone_ip() { # zone -> the address every process of that zone listens on
  local n; n=$(zone_num "$1")
  if [ "$MODE" = netns ]; then echo "10.88.0.1$n"; else echo "127.0.$n.1"; fi
}
zone_num() { case "$1" in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; *) die "no zone $1" ;; esac; }
redis_ip() { if [ "$MODE" = netns ]; then echo 10.88.0.40; else echo 127.0.4.1; fi; }
client_ip() { if [ "$MODE" = netns ]; then echo 10.88.0.50; else echo 127.0.5.1; fi; }
zone_name() { echo "us-east-1$1"; }

# Run a command inside a namespace (or directly in loopback mode).
inns() {
  local ns="$1"; shift
  if [ "$MODE" = netns ]; then ip netns exec "$PREFIX-$ns" "$@"; else "$@"; fi
}

load_env() {
  local dir="$1"
  [ -f "$dir/topology.env" ] || die "$dir/topology.env not found: not a game-day run dir"
  # shellcheck disable=SC1091
  . "$dir/topology.env"
  RUN_DIR="$dir"
}

# ---- processes -------------------------------------------------------------------------
# Each process NAME has RUN_DIR/cmd/NAME (its namespace and command line), a pid file and
# a log. `start NAME` runs the recorded command again (after a kill or a SIGTERM).

define() { # define NAME NS CMD...: record how to start NAME
  local name="$1" ns="$2"; shift 2
  { printf '%s\n' "$ns"; printf '%q ' "$@"; echo; } >"$RUN_DIR/cmd/$name"
}

start() {
  local name="$1" ns cmd
  ns=$(sed -n 1p "$RUN_DIR/cmd/$name")
  cmd=$(sed -n 2p "$RUN_DIR/cmd/$name")
  spawn "$ns" "$name" "$cmd"
}

spawn() { # spawn NS NAME CMDLINE: in the background, its pid (the process itself) recorded
  # A simple command put in the background is exec'd by the forked shell, and both
  # `ip netns exec` and `bash -c exec` exec in turn: $! is the process itself.
  if [ "$MODE" = netns ]; then
    ip netns exec "$PREFIX-$1" bash -c "exec $3" >>"$RUN_DIR/logs/$2.log" 2>&1 </dev/null &
  else
    bash -c "exec $3" >>"$RUN_DIR/logs/$2.log" 2>&1 </dev/null &
  fi
  echo $! >"$RUN_DIR/pids/$2"
  disown $! # killed by `down` or a hook, not waited for here
}

pid_of() { cat "$RUN_DIR/pids/$1" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

signal() { # signal SIG NAME...
  local sig="$1"; shift
  for name in "$@"; do
    local p; p=$(pid_of "$name")
    [ -n "$p" ] && kill "-$sig" "$p" 2>/dev/null || true
  done
}

wait_exit() { # wait_exit NAME SECONDS
  local p; p=$(pid_of "$1")
  for _ in $(seq $(($2 * 10))); do
    [ -z "$p" ] && return 0
    kill -0 "$p" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

wait_http() { # wait_http NS URL SECONDS
  for _ in $(seq $(($3 * 10))); do
    inns "$1" curl -sf -o /dev/null --max-time 1 "$2" && return 0
    sleep 0.1
  done
  return 1
}

# ---- configs ---------------------------------------------------------------------------

write_configs() {
  local z zip rip; rip=$(redis_ip)
  local endpoints="" sc_endpoints="" ws_endpoints=""
  for z in "${zones[@]}"; do
    zip=$(zone_ip "$z")
    ws_endpoints+="      - { address: \"$zip:9100\", zone: $(zone_name "$z") }"$'\n'
    for i in 1 2; do
      endpoints+="      - { address: \"$zip:900$i\", zone: $(zone_name "$z") }"$'\n'
      sc_endpoints+="      - { address: \"$zip:1500$i\", zone: $(zone_name "$z") }"$'\n'
    done
  done
  for z in "${zones[@]}"; do
    zip=$(zone_ip "$z")
    cat >"$RUN_DIR/config/gw-$z.yaml" <<YAML
# Gateway replica in zone $(zone_name "$z"), written by deploy/gameday/gameday.sh.
zone: $(zone_name "$z")
region: us-east-1
listeners:
  - { name: http, address: "$zip:8080" }
admin: { address: "$zip:9901" }
server:
  threads: 2
  upgrade_socket: $RUN_DIR/gw-$z-upgrade.sock
  shutdown: { drain_delay: 2s, grace_period: 10s }
routes:
  - name: dep
    match: { path_prefix: /dep/ }
    upstream: dep
    timeouts: { connect: 250ms, read: 3s }
    retry: { attempts: 2, on: [connect-failure, reset, 502, 503] }
    rate_limit: cluster
  - name: ws
    match: { path_prefix: /ws }
    upstream: ws
    timeouts: { upgrade_idle: 1m }
  - name: api
    match: { path_prefix: /api/ }
    upstream: api
    timeouts: { connect: 250ms, read: 1s }
    retry: { attempts: 3, on: [connect-failure, reset, timeout, 502, 503] }
    rate_limit: cluster
    idempotency: { ttl: 10m, on_store_error: fail_open }
rate_limits:
  # Far above the game day's load: what is tested is that Redis being away costs nothing.
  cluster: { rate: 5000/s, burst: 5000, key: client_ip, store: redis, on_store_error: fail_open }
redis: { url: "redis://$rip:16379", timeout: 20ms, replicas: 3 }
upstreams:
  api:
    balance: least_request
    zone_aware: { min_local_healthy: 50% }
    endpoints:
$endpoints    health_check: { path: /healthz, interval: 500ms, timeout: 300ms, healthy: 2, unhealthy: 2 }
    outlier_detection: { consecutive_failures: 3, eject_for: 5s, max_ejected: 50% }
  dep:
    endpoints:
      - { address: "$zip:15100", zone: $(zone_name "$z") }
  ws:
    zone_aware: {}
    endpoints:
$ws_endpoints    outlier_detection: { consecutive_failures: 1, eject_for: 5s }
YAML
    cat >"$RUN_DIR/config/esc-$z.yaml" <<YAML
# Edge sidecar next to the gateway of zone $(zone_name "$z"): its dependency "dep" is
# the backends, over mTLS to their sidecars, zone-aware.
zone: $(zone_name "$z")
region: us-east-1
identity: { cert: $RUN_DIR/certs/edge-$z.crt, key: $RUN_DIR/certs/edge-$z.key, trust_bundle: $RUN_DIR/certs/ca.crt }
outbound:
  dep:
    listen: "$zip:15100"
    endpoints:
$sc_endpoints    server_identity: spiffe://gameday.tollgate/backend
    timeout: 2500ms
    per_try_timeout: 800ms
    connect_timeout: 250ms
    retry: { attempts: 3, backoff: 10ms..100ms, budget: 50%, on: [5xx, reset, connect-failure, timeout] }
    outlier_detection: { consecutive_failures: 3, eject_for: 5s }
    zone_aware: { min_local_healthy: 50% }
admin: { address: "$zip:15000" }
server: { shutdown: { drain_delay: 0s, grace_period: 5s } }
YAML
    for i in 1 2; do
      cat >"$RUN_DIR/config/sc-$z$i.yaml" <<YAML
# Sidecar of backend $z$i: inbound mTLS, only the edge sidecars may call.
identity: { cert: $RUN_DIR/certs/backend-$z$i.crt, key: $RUN_DIR/certs/backend-$z$i.key, trust_bundle: $RUN_DIR/certs/ca.crt }
inbound:
  listen: "$zip:1500$i"
  forward_to: "$zip:900$i"
  allow: [spiffe://gameday.tollgate/edge]
admin: { address: "$zip:1501$i" }
server: { threads: 2, shutdown: { drain_delay: 0s, grace_period: 5s } }
YAML
    done
  done
}

define_processes() {
  local z zip
  # Not protected mode: it would refuse every client from outside its namespace (the
  # gateways) with DENIED, and the rate limits would quietly run locally all along.
  define redis redis redis-server --bind "$(redis_ip)" --port 16379 --protected-mode no --save '' --appendonly no
  for z in "${zones[@]}"; do
    zip=$(zone_ip "$z")
    for i in 1 2; do
      define "be-$z$i" "$z" "$bin/backend-demo" --listen "$zip:900$i" --zone "$(zone_name "$z")" --id "$z$i"
      define "sc-$z$i" "$z" "$bin/sidecar" --config "$RUN_DIR/config/sc-$z$i.yaml"
    done
    define "esc-$z" "$z" "$bin/sidecar" --config "$RUN_DIR/config/esc-$z.yaml"
    define "ws-$z" "$z" "$bin/gameday" ws-echo --listen "$zip:9100"
    define "gw-$z" "$z" "$bin/gateway" --config "$RUN_DIR/config/gw-$z.yaml"
  done
}

# ---- namespaces ------------------------------------------------------------------------

can_netns() {
  [ -z "${GAMEDAY_LOOPBACK:-}" ] || return 1 # forced, to try the fallback as root
  [ "$(id -u)" -eq 0 ] || return 1
  local probe="tg-probe-$$"
  ip netns add "$probe" 2>/dev/null || return 1
  ip netns del "$probe"
  command -v nft >/dev/null || return 1
}

make_netns() {
  local r="$PREFIX-region"
  ip netns add "$r"
  ip -n "$r" link set lo up
  ip -n "$r" link add br0 type bridge
  ip -n "$r" link set br0 up
  local n ip
  for n in a b c redis client; do
    case "$n" in
      redis) ip=$(redis_ip) ;;
      client) ip=$(client_ip) ;;
      *) ip=$(zone_ip "$n") ;;
    esac
    ip netns add "$PREFIX-$n"
    ip -n "$PREFIX-$n" link set lo up
    ip -n "$r" link add "v-$n" type veth peer name eth0 netns "$PREFIX-$n"
    ip -n "$r" link set "v-$n" master br0 up
    ip -n "$PREFIX-$n" addr add "$ip/24" dev eth0
    ip -n "$PREFIX-$n" link set eth0 up
  done
}

# ---- commands --------------------------------------------------------------------------

build() {
  [ -z "${TOLLGATE_BIN:-}" ] || return 0
  if ! command -v cmake >/dev/null; then
    echo "gameday: installing cmake (Pingora needs it to build)" >&2
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake redis-server nftables >/dev/null
  fi
  (cd "$repo" && cargo build -q -p gateway -p sidecar -p backends-demo -p tollgate-benches --bins) >&2
}

cmd_up() {
  local dir="${1:-}"
  build
  [ -x "$bin/gateway" ] && [ -x "$bin/sidecar" ] && [ -x "$bin/backend-demo" ] && [ -x "$bin/gameday" ] ||
    die "binaries missing in $bin: cargo build -p gateway -p sidecar -p backends-demo -p tollgate-benches --bins"
  command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
  [ -n "$dir" ] || dir=$(mktemp -d /tmp/tollgate-gameday.XXXXXX)
  mkdir -p "$dir"/{cmd,pids,logs,config,certs}
  RUN_DIR="$(cd "$dir" && pwd)"
  PREFIX="tg-$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  if can_netns; then
    MODE=netns
  else
    MODE=loopback
    if [ -n "${GAMEDAY_LOOPBACK:-}" ]; then echo "gameday: GAMEDAY_LOOPBACK is set: no network namespaces, falling back to" >&2
    else echo "gameday: cannot create network namespaces (needs root / CAP_NET_ADMIN): falling back to" >&2; fi
    echo "gameday: loopback ranges 127.0.{1,2,3}.x; network cuts (cut_zone) will be skipped." >&2
  fi
  {
    echo "MODE=$MODE"
    echo "PREFIX=$PREFIX"
    echo "SCRIPT=$script"
    echo "BIN=$bin"
    for z in "${zones[@]}"; do
      echo "GW_$z=$(zone_ip "$z"):8080"
      echo "GW_ADMIN_$z=$(zone_ip "$z"):9901"
      echo "BACKENDS_$z=\"$(zone_ip "$z"):9001 $(zone_ip "$z"):9002\""
    done
  } >"$RUN_DIR/topology.env"
  [ "$MODE" = netns ] && make_netns
  "$bin/gameday" certs "$RUN_DIR/certs" >/dev/null
  write_configs
  define_processes
  start redis
  for z in "${zones[@]}"; do
    for i in 1 2; do start "be-$z$i"; start "sc-$z$i"; done
    start "esc-$z"
    start "ws-$z"
  done
  wait_http a "http://$(zone_ip a):9001/healthz" 15 || die "backends did not start: see $RUN_DIR/logs"
  for z in "${zones[@]}"; do start "gw-$z"; done
  for z in "${zones[@]}"; do
    wait_http "$z" "http://$(zone_ip "$z"):9901/readyz" 30 ||
      die "gateway $z not ready: $(tail -5 "$RUN_DIR/logs/gw-$z.log")"
  done
  echo "$RUN_DIR"
}

cmd_run() {
  local dir="$1" schedule="${2:-$here/schedules/default.yaml}"
  load_env "$dir"
  inns client "$BIN/gameday" run --run-dir "$RUN_DIR" --schedule "$schedule"
}

cmd_down() {
  local dir="${1:-}"
  if [ -n "$dir" ]; then
    load_env "$dir"
    for f in "$RUN_DIR"/pids/*; do
      [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$RUN_DIR"/pids/*; do # gone (or a zombie for init to reap) before we return
      local p; p=$(cat "$f" 2>/dev/null) || continue
      for _ in $(seq 30); do
        [ -e "/proc/$p" ] || break
        grep -qs '^State:.*Z' "/proc/$p/status" && break
        sleep 0.1
      done
    done
    [ "$MODE" = netns ] && del_netns "$PREFIX-"
    rm -f "$RUN_DIR"/*.sock
  else
    del_netns "tg-"
  fi
}

del_netns() { # every namespace whose name starts with $1: its processes killed, then deleted
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$1" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  sleep 0.2
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$1" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Fault hooks. Each prints nothing on success and exits non-zero with a message otherwise.
cmd_hook() {
  load_env "$1"; local action="$2"; shift 2
  case "$action" in
    kill) signal KILL "$@" ;;                      # kill NAME...
    start) for n in "$@"; do alive "$n" || start "$n"; done ;;
    stop) signal STOP "$@" ;;                      # freeze
    cont) signal CONT "$@" ;;                      # thaw
    restart)                                       # restart NAME: SIGTERM, wait, start again
      signal TERM "$1"
      wait_exit "$1" 30 || die "$1 did not exit within 30 s of SIGTERM"
      start "$1" ;;
    upgrade)                                       # upgrade gw-Z: a new process takes the sockets over
      local name="$1" ns cmd
      ns=$(sed -n 1p "$RUN_DIR/cmd/$name")
      cmd=$(sed -n 2p "$RUN_DIR/cmd/$name")
      spawn "$ns" "$name" "${cmd/\/gateway /\/gateway upgrade }" ;;
    reload)                                        # reload: change every gateway's config (the file watcher applies it)
      local f
      for f in "$RUN_DIR"/config/gw-*.yaml; do
        if grep -q 'read: 1s' "$f"; then sed 's/read: 1s/read: 1500ms/' "$f" >"$f.tmp"; else sed 's/read: 1500ms/read: 1s/' "$f" >"$f.tmp"; fi
        mv "$f.tmp" "$f"
      done ;;
    rotate-certs) "$BIN/gameday" certs "$RUN_DIR/certs" --rotate >/dev/null ;;
    cut|restore)                                   # cut ZONE / restore ZONE: drop on the region bridge
      [ "$MODE" = netns ] || die "$action: no network namespaces (loopback mode)"
      local table="cut_$1"
      if [ "$action" = cut ]; then
        ip netns exec "$PREFIX-region" nft -f - <<NFT
table bridge $table {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "v-$1" drop
    oifname "v-$1" drop
  }
}
NFT
      else
        ip netns exec "$PREFIX-region" nft delete table bridge "$table"
      fi ;;
    *) die "unknown hook $action" ;;
  esac
}

cmd_all() {
  local schedule="${1:-$here/schedules/default.yaml}"
  ALL_DIR="${2:-}"
  [ -n "$ALL_DIR" ] || ALL_DIR=$(mktemp -d /tmp/tollgate-gameday.XXXXXX)
  mkdir -p "$ALL_DIR"
  # Torn down whatever happens, even when `up` fails half-way.
  trap 'cmd_down "$ALL_DIR" 2>/dev/null || true' EXIT
  trap 'exit 130' INT TERM
  cmd_up "$ALL_DIR" >/dev/null
  cmd_run "$ALL_DIR" "$schedule"
}

case "${1:-all}" in
  up) shift; cmd_up "$@" ;;
  run) shift; [ $# -ge 1 ] || die "usage: run DIR [SCHEDULE]"; cmd_run "$@" ;;
  down) shift; cmd_down "$@" ;;
  hook) shift; [ $# -ge 2 ] || die "usage: hook DIR ACTION ARGS..."; cmd_hook "$@" ;;
  all) shift || true; cmd_all "$@" ;;
  *) die "usage: gameday.sh [all [SCHEDULE [DIR]] | up [DIR] | run DIR [SCHEDULE] | down [DIR] | hook DIR ACTION ...]" ;;
esac
