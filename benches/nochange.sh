#!/usr/bin/env bash
# A no-change `archfarm build --push` over the bundled images, side by side with the
# plain alternative a user has today, everything already in Docker's cache and the
# registry: per image and platform `docker build` + `docker push`, then per image
# `docker manifest create` + `docker manifest push`. Prints both times and the ratio.
#
#   benches/nochange.sh [ROUNDS]     (default 3; the median is reported)
# Needs the services of ci/services.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need docker
rounds=${1:-3}
ns="bench-$$"
reg="127.0.0.1:5000/$ns"
export ARCHFARM_REGISTRY="$reg" ARCHFARM_STORE="/var/tmp/archfarm-bench-$$"
trap 'rm -rf "$ARCHFARM_STORE"' EXIT
cd "$here"

# The shell way, the order a user would script it (parents first).
shell_way() {
  local img plat arch file t
  # platform by platform: the local parent tag can hold one platform at a time
  for plat in linux/amd64 linux/arm64; do
    arch=${plat#linux/}
    for img in base/busybox uname greeter; do
      file=images/$img/Dockerfile
      [ "$arch" = amd64 ] && [ -f images/$img/Dockerfile.x86_64 ] && file=images/$img/Dockerfile.x86_64
      [ "$arch" = arm64 ] && [ -f images/$img/Dockerfile.aarch64 ] && file=images/$img/Dockerfile.aarch64
      t="$reg/shell-$img:$arch"
      DOCKER_BUILDKIT=0 docker build -q --platform "$plat" -f "$file" -t "$t" "images/$img" >/dev/null
      [ "$img" = base/busybox ] && docker tag "$t" "archfarm.local/images/base/busybox" >/dev/null
      docker push -q "$t" >/dev/null
    done
  done
  for img in base/busybox uname greeter; do
    docker manifest rm "$reg/shell-$img:latest" >/dev/null 2>&1 || true
    docker manifest create --insecure "$reg/shell-$img:latest" "$reg/shell-$img:amd64" "$reg/shell-$img:arm64" >/dev/null
    docker manifest push --insecure "$reg/shell-$img:latest" >/dev/null
  done
}
archfarm_way() { "$bin" build --push; }

echo "warming both (first runs build and push)" >&2
must shell_way
must archfarm_way
ts=$(for _ in $(seq "$rounds"); do t shell_way; done | median)
ta=$(for _ in $(seq "$rounds"); do t archfarm_way; done | median)
printf '%-60s %8.3f s\n' "docker build+push per platform, docker manifest create/push" "$ts"
printf '%-60s %8.3f s  (%.1fx faster)\n' "archfarm build --push (no change)" "$ta" "$(echo "$ts / $ta" | bc -l)"

# What recording the run costs: the same no-op build --push in a copy of the tree whose
# archfarm.yaml says `history: 0` (records nothing), against the tree as it is (one
# record written and the history pruned). Same store, same registry, same keys.
quiet=$(mktemp -d)
trap 'rm -rf "$ARCHFARM_STORE" "$quiet"' EXIT
cp -r images "$quiet/images"
[ -f archfarm.yaml ] && cp archfarm.yaml "$quiet/archfarm.yaml"
echo "history: 0" >>"$quiet/archfarm.yaml"
unrecorded() { (cd "$quiet" && "$bin" build --push); }
must unrecorded
rounds_rec=$((rounds * 5))
# Interleaved, so that the machine's drift falls on both alike.
pairs=$(mktemp)
trap 'rm -rf "$ARCHFARM_STORE" "$quiet" "$pairs"' EXIT
for _ in $(seq "$rounds_rec"); do
  a=$(t unrecorded)
  b=$(t archfarm_way)
  echo "$a $b" >>"$pairs"
done
tn=$(cut -d' ' -f1 "$pairs" | median)
tr=$(cut -d' ' -f2 "$pairs" | median)
runs=$(ls "$ARCHFARM_STORE/runs" | wc -l)
[ "$runs" -ge "$rounds_rec" ] || bench_fail "expected at least $rounds_rec run records, found $runs"
printf '%-60s %8.3f s\n' "archfarm build --push (no change), history: 0" "$tn"
printf '%-60s %8.3f s  (recording: %+.1f ms)\n' "archfarm build --push (no change), recorded" "$tr" "$(echo "($tr - $tn) * 1000" | bc -l)"
