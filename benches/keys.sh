#!/usr/bin/env bash
# Content-key throughput on a large generated tree, side by side with gVisor's way
# (`find | sort | xargs sha256sum | sha256sum`), in one run, and the ratio.
#
#   benches/keys.sh [FILES] [TOTAL_MIB]     (default 20000 files, 1024 MiB)
#
# Measures: the pipeline; archfarm cold (no stat cache: every byte hashed); archfarm
# warm (stat cache: an unchanged tree re-keyed without reading content). Page cache is
# warm for all three (each runs once before timing), so this compares hashing, not disk.
set -euo pipefail
. "$(dirname "$0")/common.sh"
need find sort xargs sha256sum du
files=${1:-20000}
mib=${2:-1024}

work=$(mktemp -d /var/tmp/archfarm-keys.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree="$work/images/big"
mkdir -p "$tree"
echo "generating $files files, $mib MiB in $tree" >&2
python3 - "$tree" "$files" "$mib" <<'PY'
import os, sys
root, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = mib * 1024 * 1024
rnd = os.urandom(1 << 20)
# sizes: mostly small files and a few large ones, like a real tree
big = max(1, n // 200)
small_total = total // 4
large_each = (total - small_total) // big
small_each = max(1, small_total // (n - big))
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 300))
    os.makedirs(d, exist_ok=True)
    size = large_each if i < big else small_each
    with open(os.path.join(d, "f %06d.bin" % i), "wb") as f:  # a space in every name
        off = (i * 7919) % len(rnd)
        while size > 0:
            chunk = rnd[off:off + min(size, len(rnd) - off)]
            f.write(chunk); size -= len(chunk); off = 0
        f.write(i.to_bytes(8, "little"))  # every file distinct
PY
printf 'FROM scratch\nCOPY . /\n' > "$tree/Dockerfile"

pipeline() { (cd "$work/images" && find big -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }
archfarm_hash() { "$bin" --images "$work/images" --store "$work/store" hash big --platform amd64; }

must pipeline # warm the page cache
tp=$(t pipeline)
rm -rf "$work/store"
timed "$work/cold" archfarm_hash
tc=$secs
timed "$work/warm" archfarm_hash
tw=$secs
cmp -s "$work/cold" "$work/warm" || bench_fail "the warm run printed another key than the cold one: $(cat "$work/cold" "$work/warm")"
bytes=$(du -sb "$tree" | cut -f1)
mbs() { echo "$bytes / $1 / 1000000" | bc -l; }
printf '%-44s %8.3f s  %7.0f MB/s\n' "find|sort|xargs sha256sum|sha256sum" "$tp" "$(mbs "$tp")"
printf '%-44s %8.3f s  %7.0f MB/s  (%.1fx)\n' "archfarm hash, cold (no stat cache)" "$tc" "$(mbs "$tc")" "$(echo "$tp / $tc" | bc -l)"
printf '%-44s %8.3f s               (%.1fx)\n' "archfarm hash, warm (stat cache)" "$tw" "$(echo "$tp / $tw" | bc -l)"
