# Shared by the benchmark scripts (source it after `set -euo pipefail`):
# the repository root, the release binary (built if needed), and timing helpers.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$here/target/release/archfarm"
(cd "$here" && cargo build --release --quiet)

# t CMD...: runs CMD (stdout discarded, stderr kept for diagnostics) and prints its wall
# time in seconds.
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
# quiet CMD...: CMD with its stderr discarded too (`t quiet CMD`).
quiet() { "$@" 2>/dev/null; }
# median / best: of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
best() { sort -g | head -1; }
# timed OUT CMD...: runs CMD with stdout to OUT and stderr to OUT.err and sets $secs to
# its wall time; if CMD fails, prints its stderr and stops the bench (exit 1). Call it
# directly, not in $(...), so the exit stops the script.
timed() {
  local out=$1 s e
  shift
  s=$(date +%s.%N)
  if ! "$@" >"$out" 2>"$out.err"; then
    echo "${0##*/}: failed: $*" >&2
    cat "$out.err" >&2
    exit 1
  fi
  e=$(date +%s.%N)
  secs=$(echo "$e - $s" | bc -l)
}
# rmi_keys REPORT...: removes the engine images of every key in these `--json` reports
# (archfarm labels each image dev.archfarm.key=<key>). Three passes: a parent image
# cannot go while a child built FROM it is still there.
rmi_keys() {
  local keys key _
  keys=$(cat "$@" 2>/dev/null | grep -o '"key": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}' | sort -u) || return 0
  for _ in 1 2 3; do
    for key in $keys; do
      docker images -q --filter "label=dev.archfarm.key=$key" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
    done
  done
}
