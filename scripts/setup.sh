#!/usr/bin/env bash
# Creates .venv (if missing) and installs indexer with its built-in plugins and test tools, at the exact versions
# of .ci/lock.txt (resolved and tested by scripts/lock.sh; pyproject.toml keeps the ranges library users get).
# The lock keeps torch at .ci/constraints.txt's pin: an unpinned torch would pull several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# On a line of its own: set -e stops here when constraints.sh fails (inside pip's arguments it would not, and pip
# would install unpinned, CUDA torch included).
constraints=$(bash scripts/constraints.sh .venv .ci/lock.txt .ci/constraints.txt)
# shellcheck disable=SC2086  # the constraint arguments are words
.venv/bin/python -m pip install -q $constraints -e ".[test]"
