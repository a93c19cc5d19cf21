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
# shellcheck disable=SC2046  # the constraint arguments are words
.venv-colbert/bin/python -m pip install -q \
    $(bash scripts/constraints.sh .venv-colbert .ci/lock-colbert.txt .ci/constraints.txt .ci/constraints-colbert.txt) \
    -e ".[test]" -e "plugins/indexer_colbert[modal]"
