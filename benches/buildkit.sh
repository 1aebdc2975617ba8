#!/usr/bin/env bash
# BuildKit against the classic builder, on the bundled Dockerfile images (images/ without
# the image.yaml ones: base/busybox, uname, greeter) for linux/amd64 and linux/arm64 (RUN
# steps under QEMU), side by side in one run, through the same local engine:
#
#   cold    an empty store and a nonce unique to the run copied into base/busybox (so
#           every key is new and no engine build cache answers either): every job builds
#   no-op   the same repository again: every job is cached
#
# One archfarm.yaml per backend, the same builder with `buildkit: true` or `false`.
# Cold and no-op runs alternate between the backends, so drift on this shared machine
# hits both alike. Every timed run must succeed with the expected outcomes, or the bench
# stops with the run's stderr.
#
#   benches/buildkit.sh [ROUNDS]   (default 3 cold and 5 no-op rounds; medians)
# Needs the services of ci/services.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need python3
rounds=${1:-3}
work=$(mktemp -d /var/tmp/archfarm-bench-buildkit.XXXXXX)
nonce="bk$$-$(date +%s%N)"
export ARCHFARM_REGISTRY="127.0.0.1:5000/bench-$nonce"
unset ARCH ARCHFARM_LOCAL_PREFIX
# Removes the engine images of every key the runs reported (archfarm labels each with
# dev.archfarm.key), then the folders.
cleanup() {
  rmi_keys "$work"/*/report.json
  rm -rf "$work"
}
trap cleanup EXIT

# repo BACKEND ROUND: a fresh copy of the Dockerfile images with its own nonce and an
# archfarm.yaml for BACKEND (classic or buildkit); prints its folder.
repo() {
  local dir="$work/$1-$2" flag=false
  [ "$1" = buildkit ] && flag=true
  mkdir -p "$dir/images"
  cp -r "$here/images/base" "$here/images/uname" "$here/images/greeter" "$dir/images/"
  echo "$nonce-$1-$2" >"$dir/images/base/busybox/nonce.txt"
  # Copied into the base, so no build cache of the engine's (either builder's) can answer
  # for any step of any image: a cold run really builds.
  sed -i 's|^FROM scratch$|FROM scratch\nCOPY nonce.txt /nonce.txt|' "$dir"/images/base/busybox/Dockerfile.*
  printf 'builders: [{name: local, endpoint: "unix:///var/run/docker.sock", buildkit: %s}]\n' "$flag" >"$dir/archfarm.yaml"
  echo "$dir"
}

# run DIR OUTCOME: `archfarm build --json` in DIR, timed (sets $secs); every one of the
# 6 jobs must have OUTCOME, or the bench stops loudly.
run() {
  local dir=$1 want=$2
  timed "$dir/report.json" env -C "$dir" ARCHFARM_STORE="$dir/store" "$bin" build --json
  python3 - "$dir/report.json" "$want" <<'PY' || { cat "$dir/report.json.err" >&2; exit 1; }
import json, sys
jobs = json.load(open(sys.argv[1]))["jobs"]
bad = [(j["image"], j["platform"], j["outcome"]) for j in jobs if j["outcome"] != sys.argv[2]]
if len(jobs) != 6 or bad:
    sys.exit(f"buildkit.sh: expected 6 jobs {sys.argv[2]}, got {len(jobs)} jobs; not {sys.argv[2]}: {bad}")
PY
}

declare -A cold noop dirs
for r in $(seq "$rounds"); do
  for b in classic buildkit; do
    dirs[$b]=$(repo "$b" "$r")
    run "${dirs[$b]}" built
    cold[$b]+="$secs"$'\n'
  done
done
for _ in 1 2 3 4 5; do
  for b in classic buildkit; do
    run "${dirs[$b]}" cached
    noop[$b]+="$secs"$'\n'
  done
done

med() { printf %s "$1" | grep . | median; }
cc=$(med "${cold[classic]}") cb=$(med "${cold[buildkit]}")
nc=$(med "${noop[classic]}") nb=$(med "${noop[buildkit]}")
echo "base/busybox, uname, greeter x linux/amd64 + linux/arm64 (6 jobs), one local engine:"
printf '%-40s %10s %10s %8s\n' "" classic BuildKit ratio
printf '%-40s %9.2fs %9.2fs %7.2fx\n' "cold (median of $rounds), all built" "$cc" "$cb" "$(echo "$cc / $cb" | bc -l)"
printf '%-40s %9.3fs %9.3fs %7.2fx\n' "no-op (median of 5), all cached" "$nc" "$nb" "$(echo "$nc / $nb" | bc -l)"
echo "(ratio: classic / BuildKit; above 1 means BuildKit is faster)"
# BuildKit must not make a no-op run slower: allow 10% noise plus 20 ms.
if (($(echo "$nb > $nc * 1.1 + 0.02" | bc -l))); then
  echo "buildkit.sh: a no-op run is slower with BuildKit ($nb s against $nc s)" >&2
  exit 1
fi
