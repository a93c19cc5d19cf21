#!/usr/bin/env bash
# Creates .venv-colbert (if missing) with indexer, its built-in plugins, test tools and the ColBERT plugin
# (plugins/indexer_colbert, a distribution of its own: RAGatouille needs transformers<5, huggingface_hub<1,
# datasets<5, which the main .venv has moved past), at the exact versions of .ci/lock-colbert.txt (resolved and
# tested by scripts/lock.sh from .ci/constraints.txt's torch pin and .ci/constraints-colbert.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-colbert/bin/python ] || "$PY" -m venv .venv-colbert
.venv-colbert/bin/python -m pip install -q --upgrade pip
# On a line of its own: set -e stops here when constraints.sh fails (see setup.sh).
constraints=$(bash scripts/constraints.sh .venv-colbert .ci/lock-colbert.txt .ci/constraints.txt .ci/constraints-colbert.txt)
# shellcheck disable=SC2086  # the constraint arguments are words
.venv-colbert/bin/python -m pip install -q $constraints -e ".[test]" -e "plugins/indexer_colbert[modal]"
