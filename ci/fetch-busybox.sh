#!/usr/bin/env bash
# Regenerates images/base/busybox/busybox-<arch>.tar.xz from Debian's busybox-static
# packages (the data.tar.xz member, unmodified). Not needed for a build: the files
# are committed so images/ builds offline on a fresh machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg --add-architecture arm64
apt-get update -qq
cd "$work"
for arch in amd64 arm64; do
  apt-get download "busybox-static:$arch"
  mkdir "$arch" && (cd "$arch" && ar x ../busybox-static_*_"$arch".deb data.tar.xz)
  cp "$arch/data.tar.xz" "$here/images/base/busybox/busybox-$arch.tar.xz"
done
