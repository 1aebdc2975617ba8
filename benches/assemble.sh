#!/usr/bin/env bash
# The daemonless assembler against what a user would otherwise run, in one run:
#
#  1. A copy of /usr/share (here ~650 MB, ~50,000 entries, absolute symlinks kept as
#     they are) assembled and pushed to the loopback registry, against `tar --sort=name -cf - DIR | gzip -6` alone and against
#     `docker build` (COPY) + `skopeo copy` to the same registry. Max RSS via
#     /usr/bin/time -v.
#  2. The same after one file changed: only its layer is recompressed and uploaded.
#     And the same tree through a 100 MB/s uplink (benches/throttle.py in front of the
#     registry): `build --push` uploads layers while it compresses the others, against
#     the serial pipeline `archfarm assemble --output oci:` + `skopeo copy`.
#  3. A multi-arch image of prebuilt files (images/hello-assembled: rootfs + per-arch
#     busybox) for amd64 and arm64 as docker-archives, against `docker build` (COPY)
#     per platform + `docker save`.
#
#   benches/assemble.sh [TREE]        (default /usr/share)
# Needs the services of ci/services.sh. Prints each time and the ratios.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need tar gzip docker skopeo curl /usr/bin/time
tree=${1:-/usr/share}
w=$(mktemp -d /var/tmp/archfarm-bench-asm.XXXXXX)
ns="bench-asm-$$"
reg="127.0.0.1:5000/$ns"
export ARCHFARM_REGISTRY="$reg" ARCHFARM_STORE="$w/store"
cleanup() { rm -rf "$w"; docker rmi -f "bench-asm-$$:copy" "bench-asm-$$:amd64" "bench-asm-$$:arm64" >/dev/null 2>&1 || true; }
trap cleanup EXIT

row() { printf '%-66s %8.2f s%s\n' "$1" "$2" "${3:-}"; }
ratio() { printf '  (%.1fx)' "$(echo "$1 / $2" | bc -l)"; }

echo "copying $tree (not timed)" >&2
mkdir -p "$w/images/tree" "$w/ctx"
tar -C "$(dirname "$tree")" -cf - "$(basename "$tree")" | tar -C "$w/images/tree" -xf -
[ "$(basename "$tree")" = share ] || mv "$w/images/tree/$(basename "$tree")" "$w/images/tree/share"
printf 'contents: [{src: share, dest: /usr/share}]\nconfig: {cmd: [ls, /usr/share]}\n' >"$w/images/tree/image.yaml"
size=$(du -sm "$w/images/tree/share" | cut -f1)
files=$(find "$w/images/tree/share" | wc -l)
echo "tree: ${size} MB, ${files} entries, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)" >&2
sync

cd "$w"
tar_gz() { tar --sort=name -C "$w/images/tree" -cf - share | gzip -6 >/dev/null; }
docker_way() {
  printf 'FROM scratch\nCOPY share /usr/share\n' >"$w/images/tree/Dockerfile.bench"
  DOCKER_BUILDKIT=0 docker build -q --no-cache -f "$w/images/tree/Dockerfile.bench" -t "bench-asm-$$:copy" "$w/images/tree" >/dev/null
  rm "$w/images/tree/Dockerfile.bench"
  skopeo copy -q --dest-tls-verify=false "docker-daemon:bench-asm-$$:copy" "docker://$reg/docker-copy:latest" >/dev/null
}
archfarm_way() { /usr/bin/time -v -o "$w/time.txt" "$bin" --images "$w/images" build tree --platform linux/amd64 --push; }

tt=$(t tar_gz)
td=$(t docker_way)
ta=$(t archfarm_way)
rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$w/time.txt")
row "tar --sort=name | gzip -6 (no push)" "$tt"
row "docker build (COPY) + skopeo copy to the registry" "$td"
row "archfarm build --push (assemble + push, $size MB)" "$ta" "$(ratio "$tt" "$ta") vs tar|gzip$(ratio "$td" "$ta") vs docker, max RSS ${rss} kB"

# 2. One file changes: one layer is recompressed and uploaded.
f=$(find "$w/images/tree/share" -type f -name '*.txt' | sort | head -1)
echo "one more line" >>"$f"
timed "$w/rebuild" "$bin" --images "$w/images" -v build tree --platform linux/amd64 --push
tc=$secs
# Layers uploaded while assembling and the push's own uploads, summed.
up=$(sed 's/\x1b\[[0-9;]*m//g' "$w/rebuild.err" | grep -o 'blobs_uploaded=[0-9]* bytes_uploaded=[0-9]*' |
  awk -F'[= ]' '{b += $2; n += $4} END {printf "blobs_uploaded=%d bytes_uploaded=%d", b, n}')
row "archfarm rebuild + re-push after one file changed" "$tc" "  ($up)"

# Through a 100 MB/s uplink: overlapped against assemble-then-copy. A port of its own
# each run: skopeo's blob info cache would otherwise remember where an earlier run put
# these (deterministic) layers on this host:port and mount them instead of uploading.
port=$((20000 + RANDOM % 20000))
python3 "$here/benches/throttle.py" 100e6 "$port" &
proxy=$!
trap 'kill $proxy 2>/dev/null; cleanup' EXIT
deadline=$((SECONDS + 10))
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "throttle proxy did not start" >&2; exit 1; }
  sleep 0.1
done
slow="127.0.0.1:$port/$ns-slow"
overlapped() {
  ARCHFARM_STORE="$w/store-slow1" ARCHFARM_REGISTRY="$slow" "$bin" --images "$w/images" build tree \
    --platform linux/amd64 --push
}
serial() {
  ARCHFARM_STORE="$w/store-slow2" ARCHFARM_REGISTRY="$slow" "$bin" --images "$w/images" assemble tree \
    --platform linux/amd64 --output "oci:$w/layout"
  skopeo copy -q --dest-tls-verify=false "oci:$w/layout" "docker://$slow/serial:latest" >/dev/null
}
tso=$(t serial)
tov=$(t overlapped)
row "100 MB/s uplink: archfarm assemble --output oci: + skopeo copy" "$tso"
row "100 MB/s uplink: archfarm build --push (uploads while compressing)" "$tov" "$(ratio "$tso" "$tov")"
kill $proxy

# 3. Multi-arch prebuilt files: hello-assembled for amd64 and arm64 as docker-archives.
mkdir -p "$w/multi/images"
cp -r "$here/images/hello-assembled" "$w/multi/images/"
echo "$ns" >"$w/multi/images/hello-assembled/nonce.txt"
printf 'FROM scratch\nCOPY rootfs/ /\nARG ARCH\nCOPY busybox.${ARCH} /bin/busybox\nENV PATH=/bin GREETING=two\nENTRYPOINT ["/bin/busybox"]\nCMD ["sh", "-c", "echo $GREETING"]\n' \
  >"$w/multi/Dockerfile"
docker_multi() {
  for a in amd64 arm64; do
    DOCKER_BUILDKIT=0 docker build -q --no-cache --platform "linux/$a" --build-arg "ARCH=$a" -f "$w/multi/Dockerfile" \
      -t "bench-asm-$$:$a" "$w/multi/images/hello-assembled" >/dev/null
    docker save -o "$w/multi/docker-$a.tar" "bench-asm-$$:$a"
  done
}
archfarm_multi() {
  for a in amd64 arm64; do
    ARCHFARM_STORE="$w/multi/store" "$bin" --images "$w/multi/images" assemble hello-assembled --platform "linux/$a" \
      --output "docker-archive:$w/multi/archfarm-$a.tar"
  done
}
tdm=$(t docker_multi)
tam=$(t archfarm_multi)
row "docker build (COPY) + docker save, amd64 and arm64" "$tdm"
row "archfarm assemble --output docker-archive:, amd64 and arm64" "$tam" "$(ratio "$tdm" "$tam")"

# The edit-rebuild-load cycle on the bundled example (nix2container reports 1.8 s, and
# 7.5 s for streamLayeredImage | docker load): one file changes, then into the engine.
echo "# one more line" >>"$w/multi/images/hello-assembled/rootfs/etc/group"
cycle() {
  ARCHFARM_STORE="$w/multi/store" "$bin" --images "$w/multi/images" assemble hello-assembled --platform linux/amd64 \
    --output - | docker load -q
}
row "example: one file changed, assemble --output - | docker load" "$(t cycle)"
