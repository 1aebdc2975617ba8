#!/usr/bin/env bash
# Stitching and releasing N images (default 50, two platforms each, already built and
# pushed per platform), side by side with the plain tools, in one run:
#   stitch:  `archfarm build --push` (everything cached: memo HEADs, then one index per
#            image) vs `docker manifest create` + `docker manifest push` per image;
#   release: `archfarm release vK` (check every index and child, then tag) vs
#            `skopeo copy --all` per image and `docker manifest create/push` per image.
# No blob moves in any of them. Prints times and ratios.
#
#   benches/release.sh [N] [ROUNDS]    (default 50 images, best of 3 rounds, interleaved)
# Needs the services of ci/services.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need docker skopeo jq
n=${1:-50}
rounds=${2:-3}
work=/var/tmp/archfarm-bench-release-$$
ns="bench-rel-$$"
reg=127.0.0.1:5000
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/images"
names=()
for i in $(seq -w 1 "$n"); do
  mkdir -p "$work/images/app$i"
  printf 'app %s %s\n' "$i" "$$" >"$work/images/app$i/data.txt"
  printf 'FROM scratch\nCOPY data.txt /data.txt\n' >"$work/images/app$i/Dockerfile"
  names+=("app$i")
done
cat >"$work/archfarm.yaml" <<YAML
images_dir: images
registry: $reg/$ns
platforms: [linux/amd64, linux/arm64]
store: $work/store
jobs: 8
YAML
cd "$work"
echo "building and pushing $n images x 2 platforms (not timed)" >&2
out=$("$bin" build --push --json)
declare -A key_amd key_arm index
while IFS=$'\t' read -r img plat key; do
  if [ "$plat" = linux/amd64 ]; then key_amd[$img]=$key; else key_arm[$img]=$key; fi
done < <(jq -r '.jobs[] | [.image, .platform, .key] | @tsv' <<<"$out")
while IFS=$'\t' read -r img tag; do index[$img]=${tag##*:}; done < <(jq -r '.tags[] | [.image, .tag] | @tsv' <<<"$out")

docker_manifests() { # TAG: one manifest list per image over the per-platform tags
  local img
  for img in "${names[@]}"; do
    docker manifest rm "$reg/$ns/$img:$1" >/dev/null 2>&1 || true
    docker manifest create --insecure "$reg/$ns/$img:$1" \
      "$reg/$ns/$img:amd64-${key_amd[$img]}" "$reg/$ns/$img:arm64-${key_arm[$img]}"
    docker manifest push --insecure "$reg/$ns/$img:$1"
  done
}
skopeo_all() { # TAG: copy every canonical index to TAG
  local img
  for img in "${names[@]}"; do
    skopeo copy --all --src-tls-verify=false --dest-tls-verify=false \
      "docker://$reg/$ns/$img:${index[$img]}" "docker://$reg/$ns/$img:$1"
  done
}

sa=() sd=() ra=() rs=() rd=()
for r in $(seq "$rounds"); do
  sa+=("$(t "$bin" build --push)")
  sd+=("$(t docker_manifests "stitched$r")")
  ra+=("$(t "$bin" release "v1.$r" --latest)")
  rs+=("$(t skopeo_all "s$r")")
  rd+=("$(t docker_manifests "d$r")")
  echo "round $r: stitch ${sa[-1]} vs ${sd[-1]}; release ${ra[-1]} vs skopeo ${rs[-1]}, docker ${rd[-1]}" >&2
done
stitch_a=$(printf '%s\n' "${sa[@]}" | best)
stitch_d=$(printf '%s\n' "${sd[@]}" | best)
rel_a=$(printf '%s\n' "${ra[@]}" | best)
rel_s=$(printf '%s\n' "${rs[@]}" | best)
rel_d=$(printf '%s\n' "${rd[@]}" | best)
rel_again=$(for _ in 1 2 3; do t "$bin" release "v1.1" --latest; done | best)
# Check: the release is what skopeo sees.
"$bin" release v1.1 --json | jq -e --arg n "$n" '(.images | length) == ($n | tonumber) and all(.images[]; .action == "unchanged")' >/dev/null
printf '\n%s images x 2 platforms, no blob traffic, best of %s rounds:\n' "$n" "$rounds"
printf 'stitch:  archfarm build --push %6.2f s   docker manifest create/push loop %6.2f s   speed-up %5.1fx\n' \
  "$stitch_a" "$stitch_d" "$(echo "$stitch_d / $stitch_a" | bc -l)"
printf 'release: archfarm release     %6.2f s   skopeo copy --all loop %6.2f s (%5.1fx)   docker manifest loop %6.2f s (%5.1fx)\n' \
  "$rel_a" "$rel_s" "$(echo "$rel_s / $rel_a" | bc -l)" "$rel_d" "$(echo "$rel_d / $rel_a" | bc -l)"
printf 'release again (no-op):        %6.2f s\n' "$rel_again"
