# Shared by the benchmark scripts (source it after `set -euo pipefail`): the repository
# root, the release binary (built if needed), and timing helpers. Every timed command
# must succeed: if one fails, the bench stops, naming it, with its exit status and the
# end of its stderr, so no time or ratio is ever printed for something that did not run.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# bench_fail MESSAGE...: stops the bench with MESSAGE on stderr.
bench_fail() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# need CMD...: every CMD (a name on PATH, or a path) must exist and be executable.
need() {
  local c
  for c in "$@"; do
    if [[ $c == */* ]]; then
      [ -f "$c" ] && [ -x "$c" ] || bench_fail "$c is missing or not executable"
    else
      command -v "$c" >/dev/null || bench_fail "needs $c, which is not on PATH"
    fi
  done
}

# The binary: ARCHFARM_BENCH_BIN, or the release build, wherever cargo puts it
# (CARGO_TARGET_DIR included).
if [ -n "${ARCHFARM_BENCH_BIN:-}" ]; then
  bin=$ARCHFARM_BENCH_BIN
else
  need cargo python3
  (cd "$here" && cargo build --release --quiet)
  bin="$(cd "$here" && cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/archfarm"
fi
need "$bin" bc

# checked OUT ERR CMD...: runs CMD (a command, or a function of the bench: inside it
# every failing command counts, as under `set -e`) with stdout to OUT and stderr to ERR,
# and sets $secs to its wall time; stops the bench if CMD fails.
checked() {
  local out=$1 err=$2 rc errexit=${-//[^e]/}
  shift 2
  set +e
  secs=$(
    set -e
    s=$(date +%s.%N)
    "$@" >"$out" 2>"$err"
    e=$(date +%s.%N)
    echo "$e - $s" | bc -l
  )
  rc=$?
  [ -z "$errexit" ] || set -e
  if [ "$rc" != 0 ]; then
    echo "${0##*/}: failed (exit $rc): $*" >&2
    tail -n 20 "$err" >&2
    exit 1
  fi
}
# t CMD...: prints CMD's wall time in seconds (its output discarded); stops the bench if
# CMD fails. Use it in $(...) or a pipeline.
t() {
  local err
  err=$(mktemp)
  checked /dev/null "$err" "$@"
  rm -f "$err"
  echo "$secs"
}
# timed OUT CMD...: runs CMD with stdout to OUT and stderr to OUT.err and sets $secs to
# its wall time; stops the bench if CMD fails. Call it directly, not in $(...), so
# $secs is set.
timed() {
  local out=$1
  shift
  checked "$out" "$out.err" "$@"
}
# must CMD...: runs CMD untimed, its output discarded; stops the bench if it fails.
must() { t "$@" >/dev/null; }
# median / best: of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
best() { sort -g | head -1; }
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
