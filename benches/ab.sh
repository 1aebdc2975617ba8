#!/usr/bin/env bash
# Two archfarm binaries side by side, interleaved in one run, on the operations the
# other benches time: a no-change `build --push` of the bundled images, content keys of
# a generated tree (cold and warm), `assemble --output` of a large tree (docker-archive
# and OCI layout), and `build --push` of that image into a fresh repository. For a change
# that should not move any figure (a refactor): prints each median and after/before.
#
#   benches/ab.sh BEFORE_BIN AFTER_BIN [ROUNDS] [TREE]   (default 5 rounds, /usr/share)
# Needs the services of ci/services.sh.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BEFORE_BIN AFTER_BIN [ROUNDS] [TREE]" >&2; exit 2; }
export ARCHFARM_BENCH_BIN=$2
before=$1
after=$2
rounds=${3:-5}
tree=${4:-/usr/share}
. "$(dirname "$0")/common.sh"
need "$before" "$after" docker tar
w=$(mktemp -d /var/tmp/archfarm-ab.XXXXXX)
ns="bench-ab-$$"
trap 'rm -rf "$w"' EXIT

echo "setting up: bundled images, a 5,000-file 256 MiB tree, a copy of $tree (not timed)" >&2
mkdir -p "$w/keys/images/big" "$w/asm/images/tree"
python3 - "$w/keys/images/big" <<'PY'
import os, sys
root, rnd = sys.argv[1], os.urandom(1 << 20)
for i in range(5000):
    d = os.path.join(root, "d%02d" % (i % 50))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(rnd[: (256 << 20) // 5000]); f.write(i.to_bytes(8, "little"))
PY
printf 'FROM scratch\nCOPY . /\n' >"$w/keys/images/big/Dockerfile"
tar -C "$(dirname "$tree")" -cf - "$(basename "$tree")" | tar -C "$w/asm/images/tree" -xf -
[ "$(basename "$tree")" = share ] || mv "$w/asm/images/tree/$(basename "$tree")" "$w/asm/images/tree/share"
printf 'contents: [{src: share, dest: /usr/share}]\n' >"$w/asm/images/tree/image.yaml"

# Each binary gets its own store and registry namespace, warmed once (untimed).
nochange() { ARCHFARM_STORE="$w/store-$1" ARCHFARM_REGISTRY="127.0.0.1:5000/$ns-$1" "$2" --images "$here/images" build --push; }
keys_cold() { rm -rf "$w/kstore-$1"; "$2" --images "$w/keys/images" --store "$w/kstore-$1" hash big --platform amd64; }
keys_warm() { "$2" --images "$w/keys/images" --store "$w/kstore-$1" hash big --platform amd64; }
asm_archive() { "$2" --images "$w/asm/images" --store "$w/astore-$1" assemble tree --platform linux/amd64 --output "docker-archive:$w/out-$1.tar"; }
asm_oci() { rm -rf "$w/oci-$1"; mkdir "$w/oci-$1"; "$2" --images "$w/asm/images" --store "$w/astore-$1" assemble tree --platform linux/amd64 --output "oci:$w/oci-$1"; }
push_new() {
  ARCHFARM_STORE="$w/astore-$1" ARCHFARM_REGISTRY="127.0.0.1:5000/$ns-$1-$RANDOM$RANDOM" \
    "$2" --images "$w/asm/images" build tree --platform linux/amd64 --push
}
ops=(nochange keys_cold keys_warm asm_archive asm_oci push_new)
for side in before after; do
  must nochange "$side" "${!side}"
  must keys_cold "$side" "${!side}"
  must asm_archive "$side" "${!side}"
done
for op in "${ops[@]}"; do : >"$w/$op.before"; : >"$w/$op.after"; done
for r in $(seq "$rounds"); do
  echo "round $r of $rounds" >&2
  for op in "${ops[@]}"; do
    for side in before after; do
      t "$op" "$side" "${!side}" >>"$w/$op.$side"
    done
  done
done
printf '%-40s %10s %10s %8s\n' "median of $rounds" before after ratio
for op in "${ops[@]}"; do
  b=$(median <"$w/$op.before")
  a=$(median <"$w/$op.after")
  printf '%-40s %9.3fs %9.3fs %7.2fx\n' "$op" "$b" "$a" "$(echo "$a / $b" | bc -l)"
done
