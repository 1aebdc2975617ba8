#!/usr/bin/env bash
# Planning over a tree of gVisor's shape (default tests/fixtures/gvisor-images: its
# paths, nested groups and per-arch variants, with `FROM ubuntu:22.04` placeholders), with
# external bases already resolved and cached, side by side:
#
#   gvisor   benches/gvisor-standin.mk, the stand-in that MODELS gVisor's tools/images.mk
#            make-time behaviour (not its code; see benches/make.sh): every make call
#            hashes every image folder and asks `docker images` what is loaded.
#   archfarm `archfarm list` (every image's keys and state) and `make list-all-images`
#            and `make load-<image>` through the top-level Makefile.
#
# Goals: `archfarm list` at least 10x faster than the stand-in's list-all-images, and
# `make load-<image>` of a loaded image under 50 ms.
#
#   benches/list-gvisor.sh [ROUNDS]     (default 5; medians)
#
# Environment:
#   GVISOR_IMAGES   a real checkout of gVisor's images/ folder instead of the fixture
#   LOAD_IMAGE      the image of the load figure (default basic/busybox)
# Bases: every Docker Hub reference FROM the tree (`ubuntu:22.04`...) that the mirror of
# ci/hub-mirror.sh lacks is seeded there for this run as a stand-in (busybox with a
# marker file naming it) and removed again at the end.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need make docker skopeo curl sha256sum
rounds=${1:-5}
tree=${GVISOR_IMAGES:-$here/tests/fixtures/gvisor-images}
load_image=${LOAD_IMAGE:-basic/busybox}
mirror=${ARCHFARM_HUB_MIRROR_ADDR:-127.0.0.1:5096}
work=$(mktemp -d /var/tmp/archfarm-bench-gvisor.XXXXXX)
nonce="g$$"
prefix="bench-$nonce.local/images"
remote="bench-$nonce.remote/images"
export ARCHFARM_REGISTRY="127.0.0.1:5000/bench-$nonce" ARCHFARM_STORE="$work/store" ARCHFARM_LOCAL_PREFIX="$prefix"
unset ARCH
seeded=()
cleanup() {
  docker images --no-trunc --format '{{.ID}} {{.Repository}}' | awk -v p="bench-$nonce." 'index($2, p) == 1 {print $1}' |
    sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  local ref digest
  for ref in "${seeded[@]}"; do
    # The stand-in's content is unique to it (its marker), so deleting the digest
    # removes that tag and nothing else.
    digest=$(skopeo inspect --raw --tls-verify=false "docker://$mirror/${ref%:*}:${ref##*:}" | sha256sum | cut -d' ' -f1)
    curl -sf -X DELETE "http://$mirror/v2/${ref%:*}/manifests/sha256:$digest" >/dev/null ||
      echo "list-gvisor.sh: could not remove the stand-in $ref from $mirror" >&2
  done
  rm -rf "$work"
}
trap cleanup EXIT

[ -d "$tree" ] || { echo "list-gvisor.sh: $tree is not a folder (GVISOR_IMAGES)" >&2; exit 2; }
cp -r "$tree" "$work/images"
cd "$work"
host=$(uname -m)

# Docker Hub references of the tree: `FROM [--platform=...] REF [AS name]`, without
# variables, scratch, or a registry host (a first component with a dot or colon).
hub_refs() {
  find images -name 'Dockerfile*' -type f -exec awk 'toupper($1) == "FROM" {
      for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; break } }' {} + |
    grep -v '[$]' | grep -vx scratch | awk -F/ '$1 !~ /[.:]/ || NF == 1' | sort -u
}
for ref in $(hub_refs); do
  name=${ref%%@*} && name=${name%:*}
  tag=latest && [[ ${ref%%@*} == *:* ]] && tag=${ref##*:}
  [[ $name == */* ]] || name="library/$name"
  if ! skopeo inspect --raw --tls-verify=false "docker://$mirror/$name:$tag" >/dev/null 2>&1; then
    bash "$here/ci/hub-mirror.sh" --seed "$tag=stand-in for $name:$tag" "$name" 2>/dev/null
    seeded+=("$name:$tag")
  fi
done

# Bases resolved and cached: one untimed planning run, then the image of the load
# figure built and loaded once.
"$bin" list >/dev/null
make_name=${load_image//\//_}
make -s -f "$here/Makefile" ARCHFARM="$bin" "load-$make_name" >/dev/null
docker image inspect "$prefix/$load_image:latest" >/dev/null

# The stand-in's "remote" tag for the same image, so its load-<image> finds it loaded.
h=$(cd images && find "$load_image" -type f | sort | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16)
docker tag "$prefix/$load_image:latest" "$remote/${load_image}_$host:$h"
cp "$here/benches/gvisor-standin.mk" gvisor-standin.mk
gv() { make -s -f gvisor-standin.mk REMOTE="$remote" LOCAL="$prefix-gv" "$@"; }
af() { make -s -f "$here/Makefile" ARCHFARM="$bin" "$@"; }

# Once untimed, so every timed round finds warm caches.
must gv list-all-images
must "$bin" list
must af list-all-images
must gv "load-$make_name"
must af "load-$make_name"
diff <(gv list-all-images) <(af list-all-images) >/dev/null ||
  echo "(note: the stand-in and archfarm disagree on the image list; see make list-all-images)" >&2

times() { for _ in $(seq "$rounds"); do t "$@"; done | median; }
gl=$(times gv list-all-images)
al=$(times "$bin" list)
aml=$(times af list-all-images)
gld=$(times gv "load-$make_name")
ald=$(times af "load-$make_name")
n=$(find images -name 'Dockerfile*' -printf '%h\n' | sort -u | wc -l)
echo "$tree: $n image folders, bases cached, median of $rounds:"
printf '%-52s %8.3f s\n' "gVisor-style make list-all-images" "$gl"
printf '%-52s %8.3f s  (%.1fx faster)\n' "archfarm list (keys and state)" "$al" "$(echo "$gl / $al" | bc -l)"
printf '%-52s %8.3f s  (%.1fx faster)\n' "archfarm make list-all-images" "$aml" "$(echo "$gl / $aml" | bc -l)"
printf '%-52s %8.3f s\n' "gVisor-style make load-$make_name (loaded)" "$gld"
printf '%-52s %8.3f s  (%.1fx faster)\n' "archfarm make load-$make_name (loaded)" "$ald" "$(echo "$gld / $ald" | bc -l)"
(($(echo "$gl / $al >= 10" | bc -l))) || echo "list-gvisor.sh: below the goal: archfarm list is not 10x faster" >&2
(($(echo "$ald < 0.05" | bc -l))) || echo "list-gvisor.sh: above the goal: make load-$make_name takes 50 ms or more" >&2
