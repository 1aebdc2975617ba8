#!/usr/bin/env bash
# Pushing a large image to a local registry: archfarm (from its store) side by side with
# `skopeo copy` (an oci: layout of the very same blobs -> docker://) and `docker push` (the
# image in the engine), in one run. Each push goes to a fresh, empty docker-registry of its
# own on loopback (same config as ci/services.sh): skopeo and docker remember where they
# pushed a blob and would otherwise mount it instead of sending it. Then re-pushing the
# unchanged image: archfarm against `skopeo copy` of the same. Prints times and ratios.
#
#   benches/push.sh [TOTAL_MB] [ROUNDS]    (default 1024 MB in 4 layers of random bytes, 2 rounds)
# Needs the services of ci/services.sh. Uses /var/tmp for the data (about 4x TOTAL_MB).
set -euo pipefail
. "$(dirname "$0")/common.sh"
need docker skopeo docker-registry jq curl python3
total_mb=${1:-1024}
rounds=${2:-2}
work=/var/tmp/archfarm-bench-push-$$
ns="bench-push-$$"
reg=127.0.0.1:5000
# Registries are started inside $(...): their pids go to files, not to a variable.
stop_registries() {
  local f
  for f in "$work"/reg-*/pid; do [ -f "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; }; rm -f "$f"; done
  return 0
}
trap 'stop_registries; rm -rf "$work"' EXIT
# fresh_registry NAME: starts an empty docker-registry, prints its host:port.
fresh_registry() {
  local port dir=$work/reg-$1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$dir/data" "$port" >"$dir/config.yml"
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  local deadline=$((SECONDS + 30))
  until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do
    ((SECONDS < deadline)) || { echo "registry $1 did not start" >&2; exit 1; }
    sleep 0.1
  done
  echo "127.0.0.1:$port"
}

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

af=() sk=() dk=()
for r in $(seq "$rounds"); do
  stop_registries
  rm -rf "$work"/reg-*
  rd=$(fresh_registry d) rs=$(fresh_registry s) ra=$(fresh_registry a)
  docker tag "$engine_tag" "$rd/$ns/big:t" >/dev/null
  dk+=("$(t docker push "$rd/$ns/big:t")")
  sk+=("$(t skopeo copy --dest-tls-verify=false "oci:$work/oci:big" "docker://$rs/$ns/big:t")")
  af+=("$(t "$bin" build --push big --registry "$ra/$ns")")
  docker rmi "$rd/$ns/big:t" >/dev/null
  echo "round $r: archfarm ${af[-1]} s, skopeo ${sk[-1]} s, docker push ${dk[-1]} s" >&2
done
a=$(printf '%s\n' "${af[@]}" | best)
s=$(printf '%s\n' "${sk[@]}" | best)
d=$(printf '%s\n' "${dk[@]}" | best)
# Re-push, unchanged: everything is there already.
before=$(grep -c 'blobs/uploads' "$work/reg-a/log" || true)
rpa=$(for _ in 1 2 3; do t "$bin" build --push big --registry "$ra/$ns"; done | best)
rps=$(for _ in 1 2 3; do t skopeo copy --dest-tls-verify=false "oci:$work/oci:big" "docker://$rs/$ns/big:t"; done | best)
# Upload requests archfarm's re-pushes made, from the registry's access log.
uploaded=$(($(grep -c 'blobs/uploads' "$work/reg-a/log" || true) - before))
faster=$(echo "if ($s < $d) $s else $d" | bc -l)
printf '\npush %s MiB (4 layers), best of %s rounds, a fresh registry each:\n' "$((bytes / 1048576))" "$rounds"
printf '  archfarm build --push   %6.2f s\n  skopeo copy oci: ->     %6.2f s\n  docker push             %6.2f s\n' "$a" "$s" "$d"
printf '  archfarm / faster other  %.2f  (target <= 1.10)\n' "$(echo "$a / $faster" | bc -l)"
printf 're-push unchanged (best of 3):\n  archfarm %.3f s, skopeo copy %.3f s, ratio %.2f; upload requests by archfarm: %s\n' \
  "$rpa" "$rps" "$(echo "$rpa / $rps" | bc -l)" "$uploaded"
