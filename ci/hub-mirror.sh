#!/usr/bin/env bash
# A loopback docker-registry that plays Docker Hub, for Dockerfiles as people write them
# (`FROM busybox:1.31.1`) on machines with no internet: the engines use it as their
# --registry-mirror (ci/services.sh, ci/extra-dockerd.sh). Its own config file and storage
# folder, separate from the farm's registry; idempotent: a mirror that answers is left
# running, and images already seeded (same index digest) are not pushed again.
#
# Seeded with two-platform images (an OCI image index: linux/amd64 + linux/arm64) built
# deterministically by ci/oci_seed.py from images/base/busybox/busybox-{amd64,arm64}.tar.xz:
#   library/busybox:1.31.1, library/busybox:latest   the same content
#   library/busybox:moved                            differs by /etc/archfarm-seed ("moved"),
#                                                    for tests that move a tag (on a mirror
#                                                    of their own, never on this one)
#
#   ci/hub-mirror.sh                  start and seed
#   ci/hub-mirror.sh --seed TAGS=MARKER REPO
#                                     also push one more image (e.g. `22.04=ubuntu library/ubuntu`)
#
# Environment:
#   ARCHFARM_HUB_MIRROR_ADDR   where it listens (default 127.0.0.1:5096)
#   ARCHFARM_STATE             where its config, storage and log live (default /var/lib/archfarm-ci)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
addr=${ARCHFARM_HUB_MIRROR_ADDR:-127.0.0.1:5096}
state=${ARCHFARM_STATE:-/var/lib/archfarm-ci}
log() { printf 'hub-mirror: %s\n' "$*" >&2; }

answers() { curl -sf --max-time 2 "http://$addr/v2/" >/dev/null 2>&1; }

start() {
  if answers; then
    log "mirror at $addr already answers"
    return
  fi
  mkdir -p "$state/hub-mirror"
  cat >"$state/hub-mirror.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/hub-mirror
  delete:
    enabled: true
http:
  addr: $addr
EOF
  log "starting docker-registry on $addr (storage: $state/hub-mirror)"
  nohup docker-registry serve "$state/hub-mirror.yml" >"$state/hub-mirror.log" 2>&1 &
  local deadline=$((SECONDS + 30))
  until answers; do
    ((SECONDS < deadline)) || { log "did not answer within 30s (log: $state/hub-mirror.log)"; return 1; }
    sleep 0.2
  done
}

# seed REPO IMAGE...: writes the images (oci_seed.py's TAG[,TAG...][=MARKER]) as an OCI
# layout and pushes every tag whose digest the mirror does not already serve.
seed() {
  local repo=$1
  shift
  local work
  work=$(mktemp -d)
  python3 "$here/ci/oci_seed.py" "$work/layout" "$here/images/base/busybox" "$@" >"$work/tags"
  local tag digest have
  while read -r tag digest; do
    have=$( (skopeo inspect --raw --tls-verify=false "docker://$addr/$repo:$tag" 2>/dev/null || echo missing) | sha256sum | cut -d' ' -f1)
    if [ "sha256:$have" = "$digest" ]; then
      continue
    fi
    log "seeding $repo:$tag ($digest)"
    skopeo copy --quiet --all --preserve-digests --dest-tls-verify=false \
      "oci:$work/layout:$tag" "docker://$addr/$repo:$tag"
    check "$repo:$tag" "$digest"
  done <"$work/tags"
  rm -rf "$work"
}

# check REF DIGEST: the mirror serves REF as that index, with both platforms.
check() {
  local raw
  raw=$(skopeo inspect --raw --tls-verify=false "docker://$addr/$1")
  [ "sha256:$(printf %s "$raw" | sha256sum | cut -d' ' -f1)" = "$2" ] ||
    { log "$1 on $addr is not $2 after the copy"; return 1; }
  printf %s "$raw" | python3 -c '
import json, sys
index = json.load(sys.stdin)
platforms = sorted(m["platform"]["os"] + "/" + m["platform"]["architecture"] for m in index["manifests"])
sys.exit(0 if platforms == ["linux/amd64", "linux/arm64"] else "platforms: %s" % platforms)' ||
    { log "$1 on $addr is not an index of linux/amd64 and linux/arm64"; return 1; }
}

start
if [ "${1:-}" = "--seed" ]; then
  seed "$3" "$2"
  log "ready: http://$addr ($3:${2%%=*})"
else
  seed library/busybox 1.31.1,latest moved=moved
  log "ready: http://$addr (library/busybox:1.31.1, :latest, :moved)"
fi
