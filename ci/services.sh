#!/usr/bin/env bash
# Installs and starts the real services archfarm's tests and its main job use, on a
# Debian machine, as root: the Docker engine, QEMU binfmt emulation, a registry on
# loopback, and a second loopback registry that plays Docker Hub (ci/hub-mirror.sh:
# library/busybox:1.31.1 and :latest for linux/amd64 and linux/arm64), which dockerd
# uses as its --registry-mirror, so `FROM busybox:1.31.1` builds with no internet.
# Idempotent: a service that already answers is left alone.
#
#   ci/services.sh            install (if needed) and start everything
#
# Environment:
#   ARCHFARM_REGISTRY_ADDR   where the registry listens (default 127.0.0.1:5000)
#   ARCHFARM_HUB_MIRROR_ADDR where the Docker Hub mirror listens (default 127.0.0.1:5096)
#   ARCHFARM_STATE           where the registries and dockerd logs live (default /var/lib/archfarm-ci)
set -euo pipefail
. "$(dirname "$0")/apt.sh"

registry_addr=${ARCHFARM_REGISTRY_ADDR:-127.0.0.1:5000}
hub_mirror=http://${ARCHFARM_HUB_MIRROR_ADDR:-127.0.0.1:5096}
state=${ARCHFARM_STATE:-/var/lib/archfarm-ci}
mkdir -p "$state"

log() { printf 'services: %s\n' "$*" >&2; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds or the
# deadline passes; a condition with a deadline, never a fixed sleep.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what did not come up within ${seconds}s"
      return 1
    fi
    sleep 0.2
  done
}

install_packages() {
  apt_install_missing services docker.io qemu-user-static binfmt-support docker-registry skopeo umoci curl \
    ca-certificates make xz-utils iproute2
}

start_binfmt() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  # The packaged handlers carry the F (fix binary) flag, so they work inside containers.
  update-binfmts --enable >/dev/null 2>&1 || true
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
    update-binfmts --enable qemu-aarch64
  fi
  grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64
  log "binfmt: $(cd /proc/sys/fs/binfmt_misc && ls -d qemu-* | tr '\n' ' ')"
}

docker_answers() { curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping; }

start_dockerd() {
  if docker_answers; then
    log "dockerd already answers"
    # A mirror is a start-up flag: an engine started before this script knew of the
    # mirror keeps resolving Docker Hub names nowhere until it is restarted.
    local mirrors
    mirrors=$(curl -sf --unix-socket /var/run/docker.sock http://localhost/info |
      python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)["RegistryConfig"]["Mirrors"] or []))' || true)
    case " $mirrors " in
    *" $hub_mirror/ "* | *" $hub_mirror "*) ;;
    *) log "WARNING: the running dockerd has no --registry-mirror=$hub_mirror (mirrors: ${mirrors:-none}):" \
      "FROM busybox:1.31.1 will not resolve; restart dockerd (stop it, then run ci/services.sh again)" ;;
    esac
    return
  fi
  # An engine still starting up (a package's init script may have launched one) is
  # waited for, not doubled: a second dockerd would fail on the first one's pidfile.
  if pgrep -x dockerd >/dev/null && wait_for "the running dockerd" 60 docker_answers; then
    log "dockerd started elsewhere now answers"
    start_dockerd
    return
  fi
  local attempt
  for attempt in 1 2; do
    stop_stale_dockerd
    log "starting dockerd (registry mirror $hub_mirror)"
    # cgroupfs driver: these machines have no systemd as PID 1.
    nohup dockerd --exec-opt native.cgroupdriver=cgroupfs --registry-mirror="$hub_mirror" >"$state/dockerd.log" 2>&1 &
    wait_for "dockerd (attempt $attempt, log: $state/dockerd.log)" 120 docker_answers && return
    log "the last lines of $state/dockerd.log:"
    tail -n 40 "$state/dockerd.log" | sed 's/^/  dockerd: /' >&2
  done
  return 1
}

# stop_stale_dockerd: kills an engine that never answered and removes what a killed or
# snapshotted engine leaves behind, each of which makes the next dockerd fail or hang:
# its pidfile ("pid file found, ensure docker is not running"), and containerd sockets
# and pidfiles nobody listens on (dockerd then waits for containerd until it gives up).
stop_stale_dockerd() {
  if pgrep -x dockerd >/dev/null; then
    pkill -x dockerd || true
    wait_for "the old dockerd's exit" 30 bash -c '! pgrep -x dockerd'
  fi
  pgrep -x containerd >/dev/null || rm -f /run/containerd/containerd.sock
  rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid /var/run/docker/containerd/containerd.sock
}

registry_answers() { curl -sf "http://$registry_addr/v2/" >/dev/null; }

start_registry() {
  if registry_answers; then
    log "registry at $registry_addr already answers"
    return
  fi
  mkdir -p "$state/registry"
  cat >"$state/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry
  delete:
    enabled: true
http:
  addr: $registry_addr
EOF
  log "starting docker-registry on $registry_addr"
  nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
  wait_for "docker-registry (log: $state/registry.log)" 30 registry_answers
}

# Tools the tests start services with: the publishing tests run their own registries
# (htpasswd basic auth, token auth) and a token issuer (htpasswd for bcrypt entries, the
# openssl CLI for keys, certificates and RS256 signatures); the fleet tests reach a builder
# over ssh through an sshd of their own on loopback (openssh-server, never started as a
# system service here: a policy-rc.d keeps the package from starting one).
install_test_tools() {
  local missing=()
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d own_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$own_policy" ] || rm -f "$policy"
  fi
}

install_packages
install_test_tools
start_binfmt
start_registry
# Before dockerd: the engine is started with the mirror as its --registry-mirror.
bash "$(dirname "$0")/hub-mirror.sh"
start_dockerd
log "ready: dockerd $(docker version --format '{{.Server.Version}}' 2>/dev/null), registry http://$registry_addr, Docker Hub mirror $hub_mirror"
