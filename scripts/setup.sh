#!/usr/bin/env bash
# Creates .venv (if missing) and installs indexer with its built-in plugins and test tools.
# torch is pinned through a constraints file: an unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c .ci/constraints.txt -e ".[test]"
