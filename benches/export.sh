#!/usr/bin/env bash
# Taking an engine's build into the store: archfarm (docker save, reproducible rewrite,
# gzip -6 on every core, digests) against `docker save IMAGE | gzip -6`, in one run.
# The image is one layer of SIZE_MB random bytes (gzip's worst case), built once
# through archfarm; each archfarm round starts from an empty store, so the engine memo
# (the key label) exports it again.
#
#   benches/export.sh [SIZE_MB] [ROUNDS]    (default 512 MB, 2 rounds)
# Needs the services of ci/services.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need docker gzip python3
size_mb=${1:-512}
rounds=${2:-2}
w=$(mktemp -d /var/tmp/archfarm-bench-export.XXXXXX)
export ARCHFARM_REGISTRY="127.0.0.1:5000/bench-export-$$"
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/images/big"
head -c "$((size_mb << 20))" /dev/urandom >"$w/images/big/blob"
printf 'FROM scratch\nCOPY blob /blob\n' >"$w/images/big/Dockerfile"
ARCHFARM_STORE="$w/store" "$bin" --images "$w/images" build big --platform linux/amd64 --json >"$w/built.json"
image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["key"])' "$w/built.json")
ref=$(docker images --no-trunc -q --filter "label=dev.archfarm.key=$image" | head -1)
archfarm_export() {
  rm -rf "$w/store"
  ARCHFARM_STORE="$w/store" "$bin" --images "$w/images" build big --platform linux/amd64
}
docker_export() { docker save "$ref" | gzip -6 >/dev/null; }
ta=$(for _ in $(seq "$rounds"); do t archfarm_export; done | best)
td=$(for _ in $(seq "$rounds"); do t docker_export; done | best)
printf '%-52s %8.2f s\n' "docker save | gzip -6 ($size_mb MB)" "$td"
printf '%-52s %8.2f s  (%.1fx)\n' "archfarm: engine -> store (rewrite, parallel gzip)" "$ta" "$(echo "$td / $ta" | bc -l)"
