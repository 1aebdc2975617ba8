#!/usr/bin/env bash
# `archfarm matrix` over 200 images x 2 platforms with everything built (every key in
# the registry, so the matrix is empty): the time CI pays each night to learn there is
# nothing to do. Side by side: the same 400 registry lookups as a shell loop of
# `curl --head` per key tag (the cheapest thing a script could do, and it still needs
# the keys from somewhere).
#
#   benches/matrix.sh [ROUNDS]     (default 5; the median is reported)
# Needs the loopback registry (ci/services.sh) and the engine once, for the seed.
#
# "Everything built" is set up without 400 builds: one tiny image is built and pushed
# for real, then its manifest is put under every image's per-platform key tag (blobs
# mounted across repositories). The registry answers those HEADs exactly as it would
# after real builds; matrix only asks HEAD.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need curl python3
rounds=${1:-5}
work=$(mktemp -d /var/tmp/archfarm-bench-matrix.XXXXXX)
ns="bench-matrix-$$"
reg_host=127.0.0.1:5000
export ARCHFARM_REGISTRY="$reg_host/$ns" ARCHFARM_STORE="$work/store"
unset ARCH
trap 'rm -rf "$work"' EXIT

for n in $(seq 0 199); do
  d="$work/images/img$(printf %03d "$n")"
  mkdir -p "$d"
  printf 'FROM scratch\nCOPY . /data/\n' >"$d/Dockerfile"
  head -c 4096 /dev/urandom >"$d/data.bin"
done

echo "seeding: one real image, then its manifest under all 400 key tags" >&2
mkdir -p "$work/seed/images/seed"
printf 'FROM scratch\nCOPY . /\n' >"$work/seed/images/seed/Dockerfile"
echo "$ns" >"$work/seed/images/seed/nonce"
seed=$(cd "$work/seed" && ARCHFARM_REGISTRY="$reg_host/$ns-seed" "$bin" build --push --no-stitch --platform linux/amd64 --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["pushed"])')
(cd "$work" && "$bin" list --json) >"$work/keys.json"
python3 - "$seed" "$ns" "$work/keys.json" <<'EOF'
import http.client, json, sys
seed, ns, keys = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
host, rest = seed.split("/", 1)
seed_repo, seed_tag = rest.rsplit(":", 1)
c = http.client.HTTPConnection(host)
accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
c.request("GET", f"/v2/{seed_repo}/manifests/{seed_tag}", headers={"Accept": accept})
r = c.getresponse(); manifest = r.read(); mt = r.getheader("Content-Type")
assert r.status == 200, (seed, r.status, manifest)
doc = json.loads(manifest)
blobs = [doc["config"]["digest"]] + [l["digest"] for l in doc["layers"]]
for img in keys["images"]:
    repo = f"{ns}/{img['image']}"
    for b in blobs:
        c.request("POST", f"/v2/{repo}/blobs/uploads/?mount={b}&from={seed_repo}"); r = c.getresponse(); r.read()
        assert r.status == 201, (repo, b, r.status)
    for p in img["platforms"]:
        tag = p["platform"].split("/", 1)[1].replace("/", "-") + "-" + p["key"]
        c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers={"Content-Type": mt})
        r = c.getresponse(); r.read()
        assert r.status == 201, (repo, tag, r.status)
EOF
python3 -c 'import json,sys
for i in json.load(open(sys.argv[1]))["images"]:
    for p in i["platforms"]:
        print(i["image"], p["platform"].split("/",1)[1].replace("/","-") + "-" + p["key"])' "$work/keys.json" >"$work/tags.txt"
[ "$(wc -l <"$work/tags.txt")" = 400 ]

cd "$work"
"$bin" matrix | python3 -c 'import json,sys; m=json.load(sys.stdin); assert m["jobs"] == 0, m; print("matrix: jobs =", m["jobs"], "(everything built)", file=sys.stderr)'

curl_way() {
  local image tag
  while read -r image tag; do
    curl -sf --head -o /dev/null \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
      "http://$reg_host/v2/$ns/$image/manifests/$tag"
  done <"$work/tags.txt"
}
tc=$(for _ in $(seq "$rounds"); do t curl_way; done | median)
tm=$(for _ in $(seq "$rounds"); do t "$bin" matrix; done | median)
tg=$(for _ in $(seq "$rounds"); do t "$bin" matrix --format github --waves 3; done | median)
echo "200 images x 2 platforms, every key in the registry, median of $rounds:"
printf '%-58s %8.3f s\n' "curl --head per key tag, sequential (keys given)" "$tc"
printf '%-58s %8.3f s  (%.0fx faster)\n' "archfarm matrix (keys computed, tag lists in parallel)" "$tm" "$(echo "$tc / $tm" | bc -l)"
printf '%-58s %8.3f s\n' "archfarm matrix --format github --waves 3" "$tg"
