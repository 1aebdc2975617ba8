#!/usr/bin/env bash
# `make list-all-images` and `make load-<image>` with everything already loaded, on a
# generated tree of 100 images (80 top-level, two groups of 10 nested), side by side:
#
#   gvisor   a small stand-in make file that MODELS gVisor's tools/images.mk make-time
#            behaviour (it is not gVisor's code): on every make call, for every image,
#            `find | sort | xargs sha256sum | sha256sum | cut -c1-16` over its folder,
#            plus one `docker images` to decide which images are loaded; a loaded image's
#            load-<image> then runs two `docker tag`.
#   archfarm the top-level Makefile (images.mk): make runs no command when it reads the
#            file; each target is one call of the binary (stat cache, store memo,
#            engine API).
#
#   benches/make.sh [ROUNDS]     (default 5; the median is reported)
# Needs the Docker engine (ci/services.sh). The first run builds the 100 tiny images
# (FROM scratch) once for the host; everything is removed at the end.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need make docker sha256sum
rounds=${1:-5}
work=$(mktemp -d /var/tmp/archfarm-bench-make.XXXXXX)
nonce="b$$"
prefix="bench-$nonce.local/images"   # archfarm's local prefix
remote="bench-$nonce.remote/images"  # the stand-in's "remote" prefix
export ARCHFARM_REGISTRY="127.0.0.1:5000/bench-$nonce" ARCHFARM_STORE="$work/store" ARCHFARM_LOCAL_PREFIX="$prefix"
unset ARCH
cleanup() {
  docker images --no-trunc --format '{{.ID}} {{.Repository}}' | awk -v p="bench-$nonce." 'index($2, p) == 1 {print $1}' |
    sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The tree: each image has a Dockerfile and five small files (1-16 KiB).
gen() {
  local d=$1 i
  mkdir -p "$d"
  printf 'FROM scratch\nCOPY . /data/\n' >"$d/Dockerfile"
  for i in 1 2 3 4 5; do head -c $((1024 * (i * 3))) /dev/urandom >"$d/file$i.bin"; done
}
for n in $(seq 0 $((${BENCH_TOP:-80} - 1))); do gen "$work/images/img$(printf %02d "$n")"; done
for g in groupa groupb; do for n in $(seq 0 9); do gen "$work/images/$g/img$(printf %02d "$n")"; done; done
cd "$work"
host=$(uname -m)

# --- the stand-in for gVisor's make-time behaviour (benches/gvisor-standin.mk) ---------
cp "$here/benches/gvisor-standin.mk" gvisor-standin.mk
gv() { make -s -f gvisor-standin.mk REMOTE="$remote" LOCAL="$prefix-gv" "$@"; }

# --- everything loaded, both ways ------------------------------------------------------
echo "loading 100 images both ways (archfarm builds them once; the stand-in only needs tags)" >&2
make -s -f "$here/Makefile" ARCHFARM="$bin" load-all-images >/dev/null
for d in $(find images -name Dockerfile -printf '%h\n' | sort); do
  name=${d#images/}
  h=$(cd images && find "$name" -type f | sort | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16)
  docker tag "$prefix/img00:latest" "$remote/${name}_$host:$h"
done

# Both must agree on what there is and leave <prefix>/<image>:latest.
diff <(gv list-all-images) <(make -s -f "$here/Makefile" ARCHFARM="$bin" list-all-images)
gv load-groupa_img03 || { gv -p 2>/dev/null | grep -E '^H_groupa_img03|^ARCH'; docker images | grep groupa/img03; exit 1; }
make -s -f "$here/Makefile" ARCHFARM="$bin" load-groupa_img03 >/dev/null
docker image inspect "$prefix/groupa/img03:latest" "$prefix-gv/groupa/img03:latest" >/dev/null

af() { make -s -f "$here/Makefile" ARCHFARM="$bin" "$@"; }

gl=$(for _ in $(seq "$rounds"); do t gv list-all-images; done | median)
al=$(for _ in $(seq "$rounds"); do t af list-all-images; done | median)
gld=$(for _ in $(seq "$rounds"); do t gv load-groupa_img03; done | median)
ald=$(for _ in $(seq "$rounds"); do t af load-groupa_img03; done | median)
echo "100 images, everything loaded, median of $rounds:"
printf '%-52s %8.3f s\n' "gVisor-style make list-all-images" "$gl"
printf '%-52s %8.3f s  (%.0fx faster)\n' "archfarm make list-all-images" "$al" "$(echo "$gl / $al" | bc -l)"
printf '%-52s %8.3f s\n' "gVisor-style make load-groupa_img03 (loaded)" "$gld"
printf '%-52s %8.3f s  (%.0fx faster)\n' "archfarm make load-groupa_img03 (loaded)" "$ald" "$(echo "$gld / $ald" | bc -l)"
