#!/usr/bin/env bash
# Installs the browser the HTML report tests check pages in: Debian's chromium and its
# chromedriver (selenium, pinned in ci/requirements.txt, drives it). Quiet and quick when
# they are already there.
set -euo pipefail
wanted=(chromium chromium-driver)
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "browser: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
