#!/usr/bin/env bash
# Set up, build the demo index (2,000 Wikipedia summaries, local MiniLM model, LanceDB on disk) and search it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/indexer build data/demo/wiki-demo.jsonl --title-field title --metadata-field topic --db demo.lancedb
.venv/bin/indexer search "Who painted the ceiling of the Sistine Chapel?" --db demo.lancedb --k 5
