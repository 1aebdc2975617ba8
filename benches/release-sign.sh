#!/usr/bin/env bash
# `archfarm release --sign` of N images (default 50, two platforms each, built and pushed
# with their attestations) against `archfarm release` without signing, side by side in
# one run on a registry of its own whose access log counts the requests:
#   - the first signed release (every index and child gets its cosign signature) against
#     an unsigned release of another version;
#   - a signed release of a further version (signatures already there: nothing to sign)
#     against an unsigned one;
#   - a signed rerun of a released version, which must write nothing.
# Prints seconds, requests and writes for each, and the ratios.
#
#   benches/release-sign.sh [N] [ROUNDS]    (default 50 images, best of 3 rounds)
# Needs the services of ci/services.sh (an engine for the Dockerfile images) and openssl.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need docker-registry openssl curl jq
n=${1:-50}
rounds=${2:-3}
work=$(mktemp -d /var/tmp/archfarm-bench-sign.XXXXXX)
trap '[ -f "$work/reg.pid" ] && kill "$(cat "$work/reg.pid")" 2>/dev/null; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work/data" "$port" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
echo $! >"$work/reg.pid"
deadline=$((SECONDS + 30))
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do
  ((SECONDS < deadline)) || bench_fail "the registry on :$port did not start"
  sleep 0.1
done
reg=127.0.0.1:$port

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null
mkdir -p "$work/images"
for i in $(seq -w 1 "$n"); do
  mkdir -p "$work/images/app$i"
  printf 'app %s %s\n' "$i" "$$" >"$work/images/app$i/data.txt"
  printf 'FROM scratch\nCOPY data.txt /data.txt\n' >"$work/images/app$i/Dockerfile"
done
cat >"$work/archfarm.yaml" <<YAML
images_dir: images
registry: $reg/bench
platforms: [linux/amd64, linux/arm64]
store: $work/store
jobs: 8
YAML
cd "$work"
echo "building and pushing $n images x 2 platforms with their attestations (not timed)" >&2
must "$bin" build --push

requests() { grep -c '"[A-Z]* /v2/' "$work/registry.log" || true; }
writes() { grep -cE '"(PUT|POST|PATCH|DELETE) /v2/' "$work/registry.log" || true; }
# measure LABEL CMD...: times CMD, then prints "LABEL seconds requests writes".
measure() {
  local label=$1 r0 w0 s
  shift
  r0=$(requests)
  w0=$(writes)
  s=$(t "$@")
  echo "$label $s $(($(requests) - r0)) $(($(writes) - w0))"
}

first_signed=$(measure signed "$bin" release v0.s --sign "$work/key.pem")
first_plain=$(measure plain "$bin" release v0.p)
signed=() plain=()
for r in $(seq "$rounds"); do
  signed+=("$(measure signed "$bin" release "v$r.s" --sign "$work/key.pem")")
  plain+=("$(measure plain "$bin" release "v$r.p")")
done
rerun=$(measure rerun "$bin" release v1.s --sign "$work/key.pem")
[ "$(echo "$rerun" | cut -d' ' -f4)" = 0 ] || bench_fail "a signed rerun wrote: $rerun"
# Check: every image verifies with the key.
openssl pkey -in "$work/key.pem" -pubout -out "$work/key.pub"
for i in $(seq -w 1 "$n"); do
  must "$bin" verify "$reg/bench/app$i:v1.s" --key "$work/key.pub"
done

bestof() { printf '%s\n' "$@" | sort -k2 -g | head -1; }
row() { # LABEL "label secs requests writes"
  read -r _ s q w <<<"$2"
  printf '%-52s %7.2f s %6d requests %6d writes\n' "$1" "$s" "$q" "$w"
}
b_signed=$(bestof "${signed[@]}")
b_plain=$(bestof "${plain[@]}")
printf '\n%s images x 2 platforms (each with a provenance and an SBOM attached):\n' "$n"
row "release, first with --sign (150 signatures, 200 attestations)" "$first_signed"
row "release, unsigned" "$first_plain"
row "release --sign, signatures already there (best of $rounds)" "$b_signed"
row "release, unsigned (best of $rounds)" "$b_plain"
row "release --sign again, same version (no-op)" "$rerun"
s1=$(echo "$first_signed" | cut -d' ' -f2); p1=$(echo "$first_plain" | cut -d' ' -f2)
s2=$(echo "$b_signed" | cut -d' ' -f2); p2=$(echo "$b_plain" | cut -d' ' -f2)
printf 'overhead of signing: first %.2fx, later %.2fx (goal under 1.5x)\n' "$(echo "$s1 / $p1" | bc -l)" "$(echo "$s2 / $p2" | bc -l)"
