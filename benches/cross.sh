#!/usr/bin/env bash
# An arm64 image of a real C program (lz4's library, about 8k lines from the PyPI sdist of
# `lz4`, plus a small main that compresses and checks 1 MiB), built two ways in one run:
#
#   cross   buildx's idiom: `FROM --platform=$BUILDPLATFORM toolchain-cross AS build`,
#           `ARG TARGETARCH`, aarch64-linux-gnu-gcc on the amd64 host at native speed, the
#           static binary copied into a `FROM scratch` arm64 stage
#   qemu    `FROM toolchain` for linux/arm64 and `RUN gcc`: the compiler itself runs
#           under QEMU
#
# The toolchains are farm images assembled from Debian packages by archfarm itself
# (image.yaml `packages:`, no Docker Hub): `toolchain` (gcc, libc6-dev) for amd64 and
# arm64, and `toolchain-cross` (plus gcc-aarch64-linux-gnu, libc6-dev-arm64-cross) for
# amd64 only: image.yaml has one package list for every platform, and Debian has no
# aarch64 cross compiler for arm64. Unpacked, unconfigured packages give a working gcc
# (gcc, cc1, as and ld are plain files and symlinks; no alternatives are needed when gcc
# is called by name). Both are built and loaded into the engine first, untimed; then
# `archfarm build IMAGE --platform linux/arm64` is timed for each. Both binaries must run under QEMU and print the same.
# Goal: cross at least 5x faster.
#
#   benches/cross.sh
#
# Environment:
#   LZ4_SDIST   a local lz4-*.tar.gz instead of `pip download lz4==4.4.5 --no-binary :all:`
# Needs the services of ci/services.sh and access to Debian's archive (the toolchain
# packages) and PyPI (the source), unless LZ4_SDIST is given.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need docker python3 tar
work=$(mktemp -d /var/tmp/archfarm-bench-cross.XXXXXX)
nonce="x$$-$(date +%s%N)"
prefix=archfarm.local/images
export ARCHFARM_REGISTRY="127.0.0.1:5000/bench-$nonce" ARCHFARM_STORE="$work/store"
unset ARCH ARCHFARM_LOCAL_PREFIX
cleanup() {
  rmi_keys "$work"/*.json
  docker rmi "$prefix/lz4-cross:latest" "$prefix/lz4-qemu:latest" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# --- the source, copied in at run time (never committed) -----------------------------
sdist=${LZ4_SDIST:-}
if [ -z "$sdist" ]; then
  command -v pip >/dev/null || { echo "cross.sh: needs pip (apt-get install python3-pip) or LZ4_SDIST=lz4-*.tar.gz" >&2; exit 1; }
  pip download --quiet --no-binary :all: --no-deps -d "$work/dl" lz4==4.4.5
  sdist=$(ls "$work"/dl/lz4-*.tar.gz)
fi
mkdir -p src
tar -xzf "$sdist" -C src --strip-components=2 --wildcards '*/lz4libs/*.[ch]'
cat >src/main.c <<'EOF'
/* archfarm benches/cross.sh: compress 1 MiB of deterministic text with lz4 (fast, HC,
   frame), check the round trip, and print the sizes, a checksum and the machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include "lz4.h"
#include "lz4hc.h"
#include "lz4frame.h"
#include "xxhash.h"

int main(void) {
  static const char *words[] = {"farm", "image", "layer", "index", "arm64", "amd64", "key", "store"};
  const int n = 1 << 20;
  char *in = malloc(n), *fast = malloc(LZ4_compressBound(n)), *hc = malloc(LZ4_compressBound(n));
  char *back = malloc(n);
  unsigned x = 1;
  for (int i = 0; i < n;) {
    x = x * 1103515245u + 12345u;
    const char *w = words[(x >> 16) % 8];
    for (; *w && i < n; w++) in[i++] = *w;
    if (i < n) in[i++] = ' ';
  }
  int cf = LZ4_compress_default(in, fast, n, LZ4_compressBound(n));
  int ch = LZ4_compress_HC(in, hc, n, LZ4_compressBound(n), LZ4HC_CLEVEL_DEFAULT);
  size_t bound = LZ4F_compressFrameBound(n, NULL);
  char *frame = malloc(bound);
  size_t cfr = LZ4F_compressFrame(frame, bound, in, n, NULL);
  if (LZ4_decompress_safe(hc, back, ch, n) != n || memcmp(in, back, n) || LZ4F_isError(cfr)) {
    fprintf(stderr, "lz4 round trip failed\n");
    return 1;
  }
  struct utsname u;
  uname(&u);
  printf("%s lz4 %s: %d bytes -> fast %d, hc %d, frame %zu; xxh32 %08x\n", u.machine, LZ4_versionString(), n, cf,
         ch, cfr, (unsigned)XXH32(hc, ch, 0));
  return 0;
}
EOF
lines=$(cat src/*.c src/*.h | wc -l)

# --- the repository: two toolchains, two ways to the same arm64 image ----------------
toolchain() {
  mkdir -p "images/$1/rootfs/tmp"
  touch "images/$1/rootfs/tmp/.keep" # gcc writes its temporary files to /tmp
  cat >"images/$1/image.yaml" <<EOF
packages: [dash, coreutils, gcc, libc6-dev$2]
contents: [{src: rootfs, dest: /}]
config:
  env: ["PATH=/usr/local/bin:/usr/bin:/bin"]
  cmd: ["/bin/sh"]
EOF
}
toolchain toolchain ""
toolchain toolchain-cross ", gcc-aarch64-linux-gnu, libc6-dev-arm64-cross"
cat >archfarm.yaml <<'EOF'
platforms: [linux/amd64, linux/arm64]
images:
  toolchain-cross: {platforms: [linux/amd64]}
EOF
for img in lz4-cross lz4-qemu; do
  mkdir -p "images/$img"
  cp -r src "images/$img/src"
  # Copied before the compile step: no build cache of the engine's can answer for it.
  echo "$nonce" >"images/$img/nonce.txt"
done
cat >images/lz4-cross/Dockerfile <<EOF
FROM --platform=\$BUILDPLATFORM $prefix/toolchain-cross AS build
ARG TARGETARCH
COPY nonce.txt /nonce.txt
COPY src /src
RUN mkdir /out && case "\$TARGETARCH" in \\
      arm64) cc=aarch64-linux-gnu-gcc ;; \\
      amd64) cc=gcc ;; \\
      *) echo "no compiler for \$TARGETARCH" >&2; exit 1 ;; \\
    esac && \$cc -O2 -static -o /out/lz4demo /src/*.c
FROM scratch
COPY --from=build /out/lz4demo /lz4demo
ENTRYPOINT ["/lz4demo"]
EOF
cat >images/lz4-qemu/Dockerfile <<EOF
FROM $prefix/toolchain
COPY nonce.txt /nonce.txt
COPY src /src
RUN mkdir /out && gcc -O2 -static -o /out/lz4demo /src/*.c
ENTRYPOINT ["/out/lz4demo"]
EOF

# outcome REPORT IMAGE PLATFORM WANT: the job's outcome must be WANT.
outcome() {
  python3 - "$@" <<'PY'
import json, sys
report, image, platform, want = sys.argv[1:]
doc = json.load(open(report))
jobs = [j for j in doc["jobs"] if j["image"] == image and j["platform"] == platform]
if [j["outcome"] for j in jobs] != [want]:
    sys.exit(f"cross.sh: {image} {platform}: expected one job {want}, got {jobs}; skipped: {doc.get('skipped')}")
PY
}

# --- the toolchains, untimed ------------------------------------------------------------
# Assembled, then put into the engine, as after any first build that used them: the
# timed builds compare compiling, not loading a few hundred MB of toolchain once.
echo "assembling the toolchains from Debian packages and loading them (untimed)" >&2
timed "$work/toolchain.json" "$bin" build toolchain toolchain-cross --json
timed "$work/load-toolchain" "$bin" load toolchain --platform linux/arm64
timed "$work/load-toolchain-cross" "$bin" load toolchain-cross --platform linux/amd64

# --- timed: the same arm64 image, two ways --------------------------------------------
timed "$work/cross.json" "$bin" build lz4-cross --platform linux/arm64 --json
cross=$secs
outcome "$work/cross.json" lz4-cross linux/arm64 built
timed "$work/qemu.json" "$bin" build lz4-qemu --platform linux/arm64 --json
qemu=$secs
outcome "$work/qemu.json" lz4-qemu linux/arm64 built

# Both must run under QEMU and print the same thing.
for img in lz4-cross lz4-qemu; do
  timed "$work/load-$img" "$bin" load "$img" --platform linux/arm64
  timed "$work/run-$img" docker run --rm --platform linux/arm64 "$prefix/$img:latest"
done
cmp -s "$work/run-lz4-cross" "$work/run-lz4-qemu" || {
  echo "cross.sh: the two binaries print different things:" >&2
  cat "$work/run-lz4-cross" "$work/run-lz4-qemu" >&2
  exit 1
}
grep -q '^aarch64 ' "$work/run-lz4-cross" || { echo "cross.sh: not an arm64 binary: $(cat "$work/run-lz4-cross")" >&2; exit 1; }

echo "lz4 ($lines lines of C) as a static linux/arm64 binary, archfarm build, toolchains built:"
printf '%-66s %8.1f s\n' "gcc under QEMU in the arm64 stage (FROM toolchain)" "$qemu"
printf '%-66s %8.1f s  (%.1fx faster)\n' "cross-compiled in a \$BUILDPLATFORM stage (aarch64-linux-gnu-gcc)" "$cross" "$(echo "$qemu / $cross" | bc -l)"
echo "both print: $(cat "$work/run-lz4-cross")"
(($(echo "$qemu / $cross >= 5" | bc -l))) || echo "cross.sh: below the goal: cross-compiling is not 5x faster" >&2
