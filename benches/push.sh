#!/usr/bin/env bash
# Pushing a large image to the local registry: archfarm (from its store) side by side with
# `skopeo copy` (an oci: layout of the very same blobs -> docker://) and `docker push` (the
# image in the engine), each to a fresh repository, in one run. Then re-pushing the
# unchanged image: archfarm against `skopeo copy` of the same. Prints times and ratios.
#
#   benches/push.sh [TOTAL_MB] [ROUNDS]    (default 1024 MB in 4 layers of random bytes, 2 rounds)
# Needs the services of ci/services.sh. Uses /var/tmp for the data (about 4x TOTAL_MB).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
total_mb=${1:-1024}
rounds=${2:-2}
bin="$here/target/release/archfarm"
(cd "$here" && cargo build --release --quiet)
work=/var/tmp/archfarm-bench-push-$$
ns="bench-push-$$"
reg=127.0.0.1:5000
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/images/big"
layer_mb=$((total_mb / 4))
echo "making a ${total_mb} MB image of 4 random layers" >&2
{
  echo "FROM scratch"
  for i in 1 2 3 4; do
    head -c "${layer_mb}M" /dev/urandom >"$work/images/big/layer$i.bin"
    echo "COPY layer$i.bin /layer$i.bin"
  done
} >"$work/images/big/Dockerfile"
cat >"$work/archfarm.yaml" <<YAML
images_dir: images
registry: $reg/$ns
platforms: [linux/amd64]
store: $work/store
YAML
cd "$work"
echo "building it into the store (not timed)" >&2
built=$("$bin" build big --json)
manifest=$(jq -r '.jobs[0].digest' <<<"$built")
engine_tag="$reg/$ns/big:$(jq -r '.jobs[0].platform | sub("linux/"; "")' <<<"$built")-$(jq -r '.jobs[0].key' <<<"$built")"

# The same blobs as an OCI layout, for skopeo (hard links, no copy).
mkdir -p "$work/oci/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
for d in "$manifest" $(jq -r '.config.digest, .layers[].digest' "$work/store/blobs/sha256/${manifest#sha256:}"); do
  ln -f "$work/store/blobs/sha256/${d#sha256:}" "$work/oci/blobs/sha256/${d#sha256:}"
done
size=$(stat -c %s "$work/store/blobs/sha256/${manifest#sha256:}")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"big"}}]}\n' \
  "$manifest" "$size" >"$work/oci/index.json"
bytes=$(jq '[.layers[].size] | add' "$work/store/blobs/sha256/${manifest#sha256:}")
echo "compressed layers: $((bytes / 1048576)) MiB" >&2

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
best() { sort -g | head -1; }
af=() sk=() dk=()
for r in $(seq "$rounds"); do
  docker tag "$engine_tag" "$reg/$ns-d$r/big:t" >/dev/null
  dk+=("$(t docker push "$reg/$ns-d$r/big:t")")
  sk+=("$(t skopeo copy --dest-tls-verify=false "oci:$work/oci:big" "docker://$reg/$ns-s$r/big:t")")
  af+=("$(t "$bin" build --push big --registry "$reg/$ns-a$r")")
  echo "round $r: archfarm ${af[-1]} s, skopeo ${sk[-1]} s, docker push ${dk[-1]} s" >&2
done
a=$(printf '%s\n' "${af[@]}" | best)
s=$(printf '%s\n' "${sk[@]}" | best)
d=$(printf '%s\n' "${dk[@]}" | best)
# Re-push, unchanged: everything is there already.
ra=$(for _ in 1 2 3; do t "$bin" build --push big --registry "$reg/$ns-a1"; done | best)
rs=$(for _ in 1 2 3; do t skopeo copy --dest-tls-verify=false "oci:$work/oci:big" "docker://$reg/$ns-s1/big:t"; done | best)
uploaded=$("$bin" -v build --push big --registry "$reg/$ns-a1" 2>&1 | grep -c "blob upload" || true)
faster=$(echo "if ($s < $d) $s else $d" | bc -l)
printf '\npush %s MiB (4 layers), best of %s rounds, fresh repository each:\n' "$((bytes / 1048576))" "$rounds"
printf '  archfarm build --push   %6.2f s\n  skopeo copy oci: ->     %6.2f s\n  docker push             %6.2f s\n' "$a" "$s" "$d"
printf '  archfarm / faster other  %.2f  (target <= 1.10)\n' "$(echo "$a / $faster" | bc -l)"
printf 're-push unchanged (best of 3):\n  archfarm %.3f s, skopeo copy %.3f s, ratio %.2f; blob uploads by archfarm: %s\n' \
  "$ra" "$rs" "$(echo "$ra / $rs" | bc -l)" "$uploaded"
