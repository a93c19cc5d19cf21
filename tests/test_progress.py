"""Progress: a tqdm bar on a terminal; a plain line every few seconds when stderr is a file (a log)."""

from __future__ import annotations

import io
import sys

from indexer.progress import LineProgress, progress_bar


def test_a_log_gets_whole_lines_with_the_total_and_an_eta_not_bar_redraws(monkeypatch):
    out = io.StringIO()
    bar = LineProgress("build t", total=2_000_000_000, unit="B", interval=0.0, file=out)
    with bar:
        for _ in range(4):
            bar.update(250_000_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and "\r" not in out.getvalue()
    assert lines[0].startswith("build t: 250.0 MB of 2.0 GB (12%), ") and ", ETA 0:" in lines[0]
    assert lines[-1].startswith("build t: 1.0 GB of 2.0 GB (50%)")

    quiet = io.StringIO()
    with LineProgress("embedding", unit=" chunks", file=quiet) as slow:  # the default: a line every 5 s at most
        for _ in range(1000):
            slow.update(1)
    assert quiet.getvalue() == "" and slow.line().startswith("embedding: 1,000 chunks, ")

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(progress_bar("x", total=3), LineProgress)


def test_a_run_of_shards_of_unknown_size_counts_shards_and_every_shard_moves_it_by_one():
    """An empty file (size 0) makes the run's bar count shards: a shard may not then move it by its bytes."""
    from indexer.config import BuildConfig
    from indexer.pipeline import ShardJob, _run_progress
    from indexer.types import Shard

    jobs = [ShardJob(BuildConfig(), Shard("a.jsonl", "f", size=66)), ShardJob(BuildConfig(), Shard("b.jsonl", "g"))]
    bar, steps = _run_progress(jobs, "build", enabled=False)
    assert steps == {"a.jsonl": 1, "b.jsonl": 1}
    bar, steps = _run_progress(jobs[:1] * 2, "build", enabled=False)
    assert steps == {"a.jsonl": 66}
