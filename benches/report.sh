#!/usr/bin/env bash
# `archfarm report` of a 200-job run (tests/common/synthetic_run.py: 100 images x 2
# platforms on two builders and the assembler, memo hits, a failure), side by side with
# what a user has without it: the run's own JSON record opened in the same browser.
# Prints the render time of `archfarm report`, the load time of each page in headless
# Chromium (navigation start to the load event, from the page's own timing), and the
# ratio. Goal (issue 14): the report loads in under a second.
#
#   benches/report.sh [ROUNDS] [IMAGES]     (default 5 rounds, 100 images; medians)
# Needs chromium, chromium-driver (ci/browser.sh) and selenium (ci/python-tools.sh).
set -euo pipefail
. "$(dirname "$0")/common.sh"
need python3 /usr/bin/chromium /usr/bin/chromedriver
python3 -c 'import selenium' 2>/dev/null || bench_fail "python3 lacks selenium: run ci/python-tools.sh"
rounds=${1:-5}
images=${2:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ARCHFARM_STORE="$work/store"
cd "$work"

timed "$work/id" python3 "$here/tests/common/synthetic_run.py" "$images" "$ARCHFARM_STORE"
id=$(cat "$work/id")
record="$ARCHFARM_STORE/runs/$id.json"
jobs=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["jobs"]))' "$record")

render() { "$bin" report "$id" --output "$work/report.html"; }
# load PAGE: the page's load time in ms in headless Chromium at 1600x1000; stops the bench
# when the browser fails or the page logs an error.
load() {
  timed "$work/facts.json" python3 "$here/tests/common/report_page.py" "$1" 1600 1000 "$work/shot.png"
  python3 - "$work/facts.json" <<'PY'
import json, sys
facts = json.load(open(sys.argv[1]))
errors = facts["console_errors"] + facts["page_errors"]
if errors or facts["load_ms"] is None:
    sys.exit(f"the page did not load cleanly: {errors or 'no load time'}")
print(facts["load_ms"])
PY
}

tr=$(for _ in $(seq "$rounds"); do t render; done | median)
bars=$(python3 -c 'import sys; print(open(sys.argv[1]).read().count("data-job="))' "$work/report.html")
[ "$bars" = "$jobs" ] || bench_fail "the report shows $bars bars for $jobs jobs"
lr=$(for _ in $(seq "$rounds"); do load "$work/report.html"; done | median)
lj=$(for _ in $(seq "$rounds"); do load "$record"; done | median)
size() { stat -c %s "$1" | awk '{printf "%.0f KiB", $1 / 1024}'; }

echo "$jobs jobs, $rounds rounds, medians"
printf '%-58s %9.1f ms\n' "archfarm report (record to HTML, $(size "$work/report.html"))" "$(echo "$tr * 1000" | bc -l)"
printf '%-58s %9.1f ms\n' "Chromium loads the run's JSON record ($(size "$record"))" "$lj"
printf '%-58s %9.1f ms  (%.2fx the JSON)\n' "Chromium loads the report" "$lr" "$(echo "$lr / $lj" | bc -l)"
if (($(echo "$lr >= 1000" | bc -l))); then
  echo "the report took ${lr} ms to load: the goal is under 1000 ms" >&2
  exit 1
fi
