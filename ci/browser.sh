#!/usr/bin/env bash
# Installs the browser the HTML report tests check pages in: Debian's chromium and its
# chromedriver (selenium, pinned in ci/requirements.txt, drives it). Quiet and quick when
# they are already there.
set -euo pipefail
. "$(dirname "$0")/apt.sh"
apt_install_missing browser chromium chromium-driver
