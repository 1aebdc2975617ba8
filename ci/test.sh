#!/usr/bin/env bash
# The whole test suite (the README's test command): starts the real services
# (dockerd, QEMU binfmt, a loopback registry, a loopback Docker Hub mirror) if they are
# not running, then runs every unit and integration test against them. CI=true makes a
# missing service a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/services.sh
# Two extra engines on loopback TCP: the remote builders of tests/fleet.rs.
bash ci/extra-dockerd.sh
# Python libraries the tests check archfarm's output with (signatures, attestations, SBOMs).
bash ci/python-tools.sh
# Headless Chromium and its driver: the HTML report pages are checked in it.
bash ci/browser.sh
export CI=${CI:-true}
cargo test --locked --no-fail-fast --all-targets -- --test-threads 4
