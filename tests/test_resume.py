"""A build killed with SIGKILL at any point and started again ends with exactly the rows of a clean run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import kill_during, split_demo, table_rows


def _cmd(corpus, db):
    return [sys.executable, "-m", "indexer.cli", "build", str(corpus), "--db", str(db), "--table", "t",
            "--title-field", "title", "--no-progress", "--max-tokens", "64", "--overlap", "8"]


def test_sigkill_at_any_point_then_resume_matches_a_clean_run(tmp_path, model_path):
    corpus = split_demo(tmp_path / "corpus", 8, 30)
    env = {**os.environ, "INDEXER_MODEL": model_path, "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    clean = subprocess.run(_cmd(corpus, tmp_path / "clean.lancedb"), env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    assert clean.returncode == 0, clean.stderr
    ids, texts, vectors = table_rows(tmp_path / "clean.lancedb")

    db = tmp_path / "killed.lancedb"
    kills = kill_during(_cmd(corpus, db), env, wall, (0.35, 0.5, 0.65, 0.8, 0.9, 0.95))
    assert kills >= 3, "the build finished before it could be killed: the test proves nothing"
    final = subprocess.run(_cmd(corpus, db), env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr

    got_ids, got_texts, got_vectors = table_rows(db)
    assert len(got_ids) == len(set(got_ids)), "duplicate rows after resume"
    assert got_ids == ids and got_texts == texts
    for a, b in zip(vectors, got_vectors):
        assert sum(x * y for x, y in zip(a, b)) == pytest.approx(1.0, abs=1e-3)

    # and one more run does nothing at all
    again = subprocess.run(_cmd(corpus, db) + ["--summary-json", str(tmp_path / "s.json")], env=env,
                           capture_output=True, text=True, timeout=600)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert again.returncode == 0 and summary["embedded_chunks"] == 0 and summary["shards_skipped"] == 8


def test_only_the_temporary_files_indexer_names_are_removed_and_only_by_a_lone_run(tmp_path):
    from indexer.state import WorkDir

    work = WorkDir(tmp_path / "work")
    folder = work.vector_file("m", "c", "part-00.jsonl").parent
    folder.mkdir(parents=True)
    killed = folder / "part-00.jsonl.parquet.k3x_9a0q.tmp"  # atomic_path's name (mkstemp), as a SIGKILL leaves it
    killed.write_bytes(b"half a file")
    mine = (tmp_path / "work" / "notes.tmp", folder / "draft.tmp", folder / "a.b.tmp")  # names indexer never gives
    for path in mine:
        path.write_text("user's")
    with work.lock() as alone, work.lock() as second:
        assert alone and not second, "a second run on the same work directory must not clean up after the first"
        assert work.remove_temporaries() == 1
    assert sorted((tmp_path / "work").rglob("*.tmp")) == sorted(mine)
