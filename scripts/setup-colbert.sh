#!/usr/bin/env bash
# Creates .venv-colbert (if missing) with indexer, its built-in plugins, test tools and the ColBERT plugin
# (plugins/indexer_colbert, a distribution of its own: RAGatouille needs transformers<5, huggingface_hub<1,
# datasets<5, which the main .venv has moved past). torch stays pinned through .ci/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-colbert/bin/python ] || "$PY" -m venv .venv-colbert
.venv-colbert/bin/python -m pip install -q --upgrade pip
.venv-colbert/bin/python -m pip install -q -c .ci/constraints.txt -c .ci/constraints-colbert.txt \
    -e ".[test]" -e "plugins/indexer_colbert[modal]"
