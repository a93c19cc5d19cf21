"""One big JSONL file: cut into byte-range shards, checkpointed inside each shard, killed with SIGKILL at three
points of its embedding and resumed; ten documents inserted in its middle; built by two worker processes.

The corpus is 5,000 Wikipedia summaries (shared/data/wiki-sample), cut to their first ~120 characters and chunked
at 24 tokens: 8,751 chunks of 153k tokens, which a CPU embeds in seconds; the shard size (128 kB) makes seven
shards and the checkpoint size (400 chunks) about three checkpoints a shard.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import SHARED, table_rows

import indexer

SUMMARIES = SHARED / "data" / "wiki-sample" / "summaries_en-us.json"
DOCS = 5000
CHECKPOINT = 400
SETTINGS = {"title_field": "title", "table": "t", "max_tokens": 24, "overlap": 4, "shard_size": "128kB",
            "checkpoint_chunks": CHECKPOINT}

pytestmark = pytest.mark.skipif(not SUMMARIES.is_file(), reason="needs shared/data/wiki-sample")


def wiki_records(start: int, count: int) -> list[dict]:
    summaries = list(json.loads(SUMMARIES.read_text()).values())[start : start + count]
    return [{"id": f"w{start + i}", "title": s["title"], "text": s["extract"][:120].rsplit(" ", 1)[0]}
            for i, s in enumerate(summaries)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def build_cmd(corpus: Path, db: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "indexer.cli", "build", str(corpus), "--db", str(db), "--config", str(config),
            "--shard-size", SETTINGS["shard_size"], *extra]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, model_path):
    """The corpus, a TOML config for the CLI runs, their environment, and a clean run's rows and summary."""
    tmp = tmp_path_factory.mktemp("bigfile")
    corpus = write_jsonl(tmp / "wiki.jsonl", wiki_records(0, DOCS))
    config = tmp / "build.toml"
    config.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in SETTINGS.items() if k != "shard_size") + "\n")
    env = {**os.environ, "INDEXER_MODEL": model_path, "HF_HUB_OFFLINE": "1"}
    clean = subprocess.run(build_cmd(corpus, tmp / "clean.lancedb", config, "--no-progress", "--summary-json",
                                     str(tmp / "clean.json")), env=env, capture_output=True, text=True, timeout=900)
    assert clean.returncode == 0, clean.stderr
    summary = json.loads((tmp / "clean.json").read_text())
    summary["distinct"] = len(committed_hashes(tmp / "clean.lancedb" / "_indexer"))  # chunk texts
    assert summary["shards"] >= 5 and summary["chunks"] >= 2 * CHECKPOINT * summary["shards"]
    return corpus, config, env, table_rows(tmp / "clean.lancedb"), summary


def committed_hashes(work: Path) -> set[str]:
    """Content hashes of every vector the run state holds: finished shards' files and checkpoints."""
    out: set[str] = set()
    for path in sorted((work / "vectors").rglob("*.parquet")) if work.exists() else []:
        out.update(pq.read_table(path, columns=["content_hash"]).column(0).to_pylist())
    return out


def checkpoints(work: Path) -> set[Path]:
    return set((work / "vectors").rglob("_spare/*.piece*.parquet"))


def kill_when_committed(cmd: list[str], env: dict, work: Path, target: int) -> None:
    """Run ``cmd`` and SIGKILL it as soon as the run state holds vectors for ``target`` distinct chunk texts."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                reached = len(committed_hashes(work)) >= target
            except (OSError, ValueError):  # a file renamed or removed while it was read: look again
                reached = False
            if reached:
                break
            assert proc.poll() is None, f"the build finished before {target} chunks were committed"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)


def assert_same_rows(got, want, tolerance: float = 1e-3) -> None:
    assert len(got[0]) == len(set(got[0])), "duplicate rows"
    assert got[0] == want[0] and got[1] == want[1]
    for a, b in zip(got[2], want[2]):
        assert sum(x * y for x, y in zip(a, b)) == pytest.approx(1.0, abs=tolerance)


def test_killed_three_times_while_embedding_resumes_from_its_checkpoints(setup, tmp_path):
    corpus, config, env, clean_rows, clean = setup
    db = tmp_path / "db.lancedb"
    work = db / "_indexer"
    cmd = build_cmd(corpus, db, config, "--no-progress")
    temporaries = 0
    for fraction in (0.25, 0.5, 0.75):
        before = committed_hashes(work)
        pieces_before = checkpoints(work) if work.exists() else set()
        kill_when_committed(cmd, env, work, int(clean["distinct"] * fraction))
        temporaries += len(list(work.rglob("*.tmp")))
        # what this run committed in checkpoints holds no chunk an earlier run had committed: nothing redone
        for piece in checkpoints(work) - pieces_before:
            redone = before.intersection(pq.read_table(piece, columns=["content_hash"]).column(0).to_pylist())
            assert not redone, f"{piece.name} embedded {len(redone)} chunks committed before"
    assert temporaries, "no killed run left a temporary file: the clean-up below proves nothing"

    committed = committed_hashes(work)
    left = len(list(work.rglob("*.tmp")))  # what the last kill left
    final = subprocess.run(cmd + ["--summary-json", str(tmp_path / "final.json")], env=env, capture_output=True,
                           text=True, timeout=900)
    assert final.returncode == 0, final.stderr
    summary = json.loads((tmp_path / "final.json").read_text())
    # the rerun embeds exactly the chunks not committed yet, well under a clean run's
    chunk_hashes = [h for p in (work / "chunks").rglob("*.parquet")
                    for h in pq.read_table(p, columns=["content_hash"]).column(0).to_pylist()]
    uncommitted = sum(h not in committed for h in chunk_hashes)
    assert summary["embedded_chunks"] == uncommitted <= clean["chunks"] * 0.25 + CHECKPOINT
    assert summary["embedded_chunks"] + summary["reused_chunks"] == summary["chunks"]  # of the shards not done
    assert summary["temporaries_removed"] == left
    assert_same_rows(table_rows(db), clean_rows)
    assert not list(work.rglob("*.tmp")), "temporary files of the killed runs are left"
    assert not list(work.rglob("_spare/*.parquet")), "checkpoints are left after a finished run"

    # ten documents inserted in the middle move every later byte range; only their chunks are embedded
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    new = wiki_records(DOCS, 10)
    edited = write_jsonl(tmp_path / "wiki.jsonl", records[: DOCS // 2] + new + records[DOCS // 2 :])
    out = subprocess.run(build_cmd(edited, db, config, "--no-progress", "--summary-json", str(tmp_path / "ins.json")),
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "ins.json").read_text())
    ids, texts, _ = table_rows(db)
    new_ids = {r["id"] for r in new}
    new_rows = [i for i in ids if i.split("#")[0] in new_ids]
    assert len(new_rows) >= 10 and summary["embedded_chunks"] == len(new_rows)
    assert summary["chunks"] == len(ids) == clean["chunks"] + len(new_rows) == len(set(ids))
    kept = {i: t for i, t in zip(ids, texts)}
    assert all(kept[i] == t for i, t in zip(clean_rows[0], clean_rows[1])), "an old row changed or vanished"


def test_two_worker_processes_on_one_big_file_build_the_same_rows(setup, tmp_path, model_path):
    corpus, _, _, clean_rows, clean = setup
    summary = indexer.build(str(corpus), db=str(tmp_path / "db.lancedb"), model=model_path, executor="processes",
                            workers=2, progress=False, **SETTINGS)
    assert summary.shards == clean["shards"] >= 5 and summary.embedded_chunks == clean["chunks"]
    assert_same_rows(table_rows(tmp_path / "db.lancedb"), clean_rows)


def test_a_document_id_in_two_shards_or_files_is_kept_where_it_comes_first(tmp_path, model_path):
    records = wiki_records(0, 300)
    a, b = records[:200], records[200:]
    a[150] = {**a[150], "id": a[10]["id"]}  # a later byte range of a.jsonl repeats an id of its first range
    b[20] = {**b[20], "id": a[5]["id"]}  # and b.jsonl one of a.jsonl
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", a)
    write_jsonl(folder / "b.jsonl", b)
    settings = {**SETTINGS, "shard_size": "8kB", "progress": False}
    db = tmp_path / "db.lancedb"

    def kept(doc_id: str) -> str:
        """The title that the table's first chunk of ``doc_id`` starts with."""
        ids, texts, _ = table_rows(db)
        assert len(ids) == len(set(ids))
        [title] = {t.split("\n\n")[0] for i, t in zip(ids, texts) if i == doc_id + "#0"}
        return title

    summary = indexer.build(str(folder), db=str(db), model=model_path, **settings)
    assert summary.shards >= 4
    reported = {(x.shard, x.record): x.reason for x in summary.bad}
    within, across = a[10]["id"], a[5]["id"]
    assert [k for k in reported if k[1] == within][0][0].startswith("a.jsonl@part")
    assert reported[("b.jsonl", across)] == f"duplicate id {across!r} (first in shard a.jsonl); kept the first"
    assert len(reported) == 2
    assert kept(within) == a[10]["title"] and kept(across) == a[5]["title"]

    # a.jsonl's copy goes away: b.jsonl, unchanged and done, is written again with its copy
    a[5] = {**a[5], "id": "renamed"}
    write_jsonl(folder / "a.jsonl", a)
    again = indexer.build(str(folder), db=str(db), model=model_path, **settings)
    assert again.shards_skipped >= 1 and not [x for x in again.bad if x.shard == "b.jsonl"]  # b.jsonl's
    assert kept(across) == b[20]["title"] and kept("renamed") == a[5]["title"]


def test_a_document_kept_in_a_later_file_comes_back_when_the_earlier_file_is_deleted(tmp_path, model_path):
    """Nothing to embed in the second run, only a file gone: the unchanged file's dropped copy is written again."""
    records = wiki_records(0, 40)
    a, b = records[:20], records[20:]
    b[3] = {**b[3], "id": a[2]["id"]}
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", a)
    write_jsonl(folder / "b.jsonl", b)
    db = tmp_path / "db.lancedb"
    settings = {**SETTINGS, "progress": False}
    indexer.build(str(folder), db=str(db), model=model_path, **settings)
    assert f"{a[2]['id']}#0" in table_rows(db)[0]
    (folder / "a.jsonl").unlink()
    again = indexer.build(str(folder), db=str(db), model=model_path, **settings)
    assert again.shards_removed == 1 and again.shards_skipped == 1
    ids, texts, _ = table_rows(db)
    assert {i.split("#")[0] for i in ids} == {r["id"] for r in b}
    assert [t for i, t in zip(ids, texts) if i == f"{a[2]['id']}#0"][0].startswith(b[3]["title"])
