#!/usr/bin/env bash
# Set up .venv-colbert and run, there, the ColBERT plugin's tests and the core tests that must also pass on its
# older stack (transformers 4, huggingface_hub 0.x, datasets 4). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-colbert.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv-colbert/bin/python -m pytest -q tests/test_end_to_end.py tests/test_local_embedder.py tests/test_pipeline.py \
    tests/test_plugin_host.py tests/test_lock.py tests/colbert "$@"
