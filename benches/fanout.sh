#!/usr/bin/env bash
# Fan-out over a builder fleet: 8 images x 2 platforms (linux/amd64 native, linux/arm64
# under QEMU) built over 1, 2 and 3 engines (the local dockerd, then the extra engines
# of ci/extra-dockerd.sh on 127.0.0.1:2376 and :2377). Every image has a RUN step doing
# a little CPU work and a nonce unique to the run, so nothing is cached. Prints the wall
# time per fleet size, the speed-up over one engine, and how the jobs were spread.
#
#   benches/fanout.sh
#
# Environment:
#   FANOUT_ITERS   shell-loop iterations of each RUN step (default 300000)
#   FANOUT_JOBS    builds at once per engine (default 1: one slot per engine, so the
#                  1-engine run is what `for img in ...; docker build` does)
# Needs root and the services of ci/services.sh; starts the extra engines itself.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need python3
iters=${FANOUT_ITERS:-300000}
jobs=${FANOUT_JOBS:-1}
bash "$here/ci/services.sh" >/dev/null 2>&1
bash "$here/ci/extra-dockerd.sh" 2376 2377
engines=("unix:///var/run/docker.sock" "tcp://127.0.0.1:2376" "tcp://127.0.0.1:2377")
work=$(mktemp -d /var/tmp/archfarm-fanout-XXXXXX)
trap 'rm -rf "$work"' EXIT

# make_repo DIR NONCE ENGINES: base/busybox and fan1..fan8 FROM it, and an archfarm.yaml
# listing the first ENGINES engines.
make_repo() {
  local dir=$1 nonce=$2 n=$3 i
  mkdir -p "$dir/images"
  cp -r "$here/images/base" "$dir/images/base"
  echo "$nonce" >"$dir/images/base/busybox/nonce.txt"
  for i in $(seq 8); do
    mkdir -p "$dir/images/fan$i"
    cat >"$dir/images/fan$i/Dockerfile" <<DOCKERFILE
FROM archfarm.local/images/base/busybox
RUN i=0; while [ \$i -lt $iters ]; do i=\$((i+1)); done; echo "$nonce fan$i \$i" > /fan
DOCKERFILE
  done
  {
    echo "builders:"
    for i in $(seq 0 $((n - 1))); do
      echo "  - {name: engine$((i + 1)), endpoint: '${engines[$i]}', jobs: $jobs}"
    done
  } >"$dir/archfarm.yaml"
}

printf '%-10s %10s %10s   %s\n' engines wall speed-up "jobs per builder (of 18: 8 images + base/busybox, x2 platforms)"
base=""
for n in 1 2 3; do
  dir="$work/run$n"
  make_repo "$dir" "fanout-$$-$n-$(date +%s%N)" "$n"
  timed "$dir/report.json" env -C "$dir" ARCHFARM_STORE="$dir/store" ARCHFARM_REGISTRY="127.0.0.1:5000/fanout-$$" \
    "$bin" build --platform linux/amd64,linux/arm64 --json
  wall=$secs
  [ -n "$base" ] || base=$wall
  spread=$(python3 - "$dir/report.json" <<'PY'
import collections, json, sys
r = json.load(open(sys.argv[1]))
built = [j for j in r["jobs"] if j["outcome"] == "built"]
assert len(built) == 18, f"expected 18 builds, got {len(built)}"
c = collections.Counter(j["builder"] for j in built)
print(", ".join(f"{b} {c[b]}" for b in sorted(c)))
PY
)
  printf '%-10s %9.1fs %9.2fx   %s\n' "$n" "$wall" "$(echo "$base / $wall" | bc -l)" "$spread"
done
echo "(all engines share this machine's $(nproc) cores; see docs/fleet.md for separate hosts)"
