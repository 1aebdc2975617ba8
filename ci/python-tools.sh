#!/usr/bin/env bash
# Installs the Python libraries the tests use as independent checkers (signatures, DSSE
# envelopes, in-toto statements, SBOM schemas) from PyPI, pinned in ci/requirements.txt.
# Quiet and quick when they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
for line in open("ci/requirements.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        if m.version(name) != version:
            sys.exit(1)
PY
then
    exit 0
fi
echo "python-tools: installing $(grep -cv '^#' ci/requirements.txt) packages from PyPI (ci/requirements.txt)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r ci/requirements.txt
