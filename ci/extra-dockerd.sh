#!/usr/bin/env bash
# Starts extra Docker engines on loopback TCP that act as remote builders for the fleet
# tests and the fan-out benchmark: each with its own --data-root, --exec-root, --pidfile
# and a private bridge without iptables rules (--iptables=false --ip-masq=false).
#
# Not --bridge=none: a dockerd started with it deletes the host's docker0 interface on
# start-up (moby's removeDefaultBridgeInterface), which breaks every RUN step of the
# main engine on the same host ("could not find bridge docker0"). Each extra engine
# gets its own bridge, afbr<PORT>, on 10.213.<PORT % 250>.1/24 instead.
# Each uses the Docker Hub mirror of ci/hub-mirror.sh as its --registry-mirror, like the
# main engine. Idempotent: an engine whose API already answers is left alone (with a
# warning when it lacks the mirror). Needs root and the docker.io package (ci/services.sh
# installs it).
#
#   ci/extra-dockerd.sh              start the engines on 127.0.0.1:2376 and :2377
#   ci/extra-dockerd.sh 2378 ...     start engines on these ports instead
#   ci/extra-dockerd.sh --stop PORT  stop the engine on PORT (by its pidfile)
#
# Environment:
#   ARCHFARM_STATE         where each engine's folders and log live (default /var/lib/archfarm-ci)
#   ARCHFARM_HUB_MIRROR_ADDR  the Docker Hub mirror (default 127.0.0.1:5096)
#   ARCHFARM_DOCKERD_TLS   a folder with ca.pem, cert.pem, key.pem: the engines then
#                          serve TLS and verify clients against ca.pem (--tlsverify)
set -euo pipefail

state=${ARCHFARM_STATE:-/var/lib/archfarm-ci}
hub_mirror=http://${ARCHFARM_HUB_MIRROR_ADDR:-127.0.0.1:5096}
log() { printf 'extra-dockerd: %s\n' "$*" >&2; }

tls=${ARCHFARM_DOCKERD_TLS:-}
# api PORT PATH: a GET on the engine's API.
api() {
  if [ -n "$tls" ]; then
    curl -sf --max-time 2 --cacert "$tls/ca.pem" --cert "$tls/cert.pem" --key "$tls/key.pem" \
      "https://127.0.0.1:$1$2"
  else
    curl -sf --max-time 2 "http://127.0.0.1:$1$2"
  fi
}
answers() { api "$1" /_ping >/dev/null 2>&1; }

# wait_for PORT SECONDS: polls the engine's API until it answers or the deadline passes.
wait_for() {
  local port=$1
  local deadline=$((SECONDS + $2))
  until answers "$port"; do
    if ((SECONDS >= deadline)); then
      log "dockerd on 127.0.0.1:$port did not answer within $2s (log: $state/dockerd-$port/dockerd.log)"
      return 1
    fi
    sleep 0.2
  done
}

start() {
  local port=$1
  local dir="$state/dockerd-$port"
  if answers "$port"; then
    log "dockerd on 127.0.0.1:$port already answers"
    api "$port" /info | grep -q "\"$hub_mirror/\"" ||
      log "WARNING: dockerd on 127.0.0.1:$port has no --registry-mirror=$hub_mirror: restart it" \
        "(ci/extra-dockerd.sh --stop $port, then ci/extra-dockerd.sh $port)"
    return
  fi
  mkdir -p "$dir/data" "$dir/exec"
  # A stale pidfile from a killed engine makes dockerd refuse to start.
  if [ -f "$dir/dockerd.pid" ] && ! kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
    rm -f "$dir/dockerd.pid"
  fi
  local bridge="afbr$port"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add name "$bridge" type bridge
    ip addr add "10.213.$((port % 250)).1/24" dev "$bridge"
    ip link set "$bridge" up
  fi
  log "starting dockerd on 127.0.0.1:$port (state: $dir, bridge: $bridge)"
  # Its own containerd socket lives under the exec root, so engines never share one.
  local tls_flags=()
  [ -z "$tls" ] || tls_flags=(--tlsverify --tlscacert "$tls/ca.pem" --tlscert "$tls/cert.pem" --tlskey "$tls/key.pem")
  nohup dockerd "${tls_flags[@]}" \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" \
    -H "tcp://127.0.0.1:$port" \
    --bridge="$bridge" --iptables=false --ip-masq=false \
    --exec-opt native.cgroupdriver=cgroupfs \
    --registry-mirror="$hub_mirror" \
    >"$dir/dockerd.log" 2>&1 &
  wait_for "$port" 60
}

stop() {
  local port=$1
  local pidfile="$state/dockerd-$port/dockerd.pid"
  if [ ! -f "$pidfile" ]; then
    ip link del "afbr$port" 2>/dev/null || true
    return 0
  fi
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "dockerd $pid on :$port did not stop"; return 1; }
    sleep 0.2
  done
  ip link del "afbr$port" 2>/dev/null || true
}

if [ "${1:-}" = "--stop" ]; then
  shift
  for p in "$@"; do stop "$p"; done
  exit 0
fi
ports=("$@")
((${#ports[@]})) || ports=(2376 2377)
for p in "${ports[@]}"; do start "$p"; done
