"""Chunking wall time: one process (the ``local`` executor) against the ``processes`` executor, for a corpus of
many files and for the same corpus as one big file.

    python scripts/bench_executor.py [--shards 8] [--workers 2] [--rounds 3] [--repeat 1] [--model PATH]

The demo corpus (data/demo/wiki-demo.jsonl, repeated --repeat times) is written twice: split into --shards files
(``files``), and as one file that ``--shard-size`` cuts into about as many byte ranges (``one file``). Each job
reads one shard through the jsonl source and cuts it with the token chunker, exactly as a build does, and returns
counts; nothing is embedded or written, so the figure is the part of a build that the processes executor exists to
spread over cores. For each layout three runs are compared:

- ``single``: one process on one core (the fast tokenizer's own thread pool switched off with
  TOKENIZERS_PARALLELISM=false), i.e. a plain single-process chunker;
- ``local``: the local executor as it ships, one process whose tokenizer batch-encodes on every core;
- ``processes``: the processes executor, --workers processes, each pinned to its share of the cores.

Every run first does every job once untimed (the pipeline's per-process components are built and, for the pool,
the workers started); then timed rounds alternate between the three so that load from other programs hits them
alike, and the medians are compared. The one-time worker start is printed separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo" / "wiki-demo.jsonl"


def chunk_shard(job) -> tuple[int, int, int, float]:
    """Read and chunk one shard as a build does; return (documents, chunks, tokens, CPU seconds)."""
    from indexer.pipeline import count_chunks, plan_for_job

    plan = plan_for_job(job)
    c0 = time.process_time()
    counts = count_chunks(plan, [job.shard])
    return (*counts, time.process_time() - c0)


def write_corpus(folder: Path, shards: int, repeat: int) -> dict[str, Path]:
    """The corpus as ``shards`` files in ``folder/files`` and as one file ``folder/one.jsonl``."""
    lines = [line for line in DEMO_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    import json

    records = []
    for r in range(repeat):
        for line in lines:
            rec = json.loads(line)
            rec["id"] = f"{rec['id']}-{r}"
            records.append(json.dumps(rec, ensure_ascii=False))
    (folder / "files").mkdir()
    per = -(-len(records) // shards)
    for s in range(shards):
        part = records[s * per : (s + 1) * per]
        (folder / "files" / f"part-{s:02d}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    (folder / "one.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    return {"files": folder / "files", "one file": folder / "one.jsonl"}


def timed(executor, jobs) -> tuple[float, float, tuple[int, int, int]]:
    """Wall seconds, cores kept busy by the jobs (their CPU seconds, all threads, over the wall time), and the
    summed counts."""
    t0 = time.perf_counter()
    results = list(executor.map(chunk_shard, jobs))
    wall = time.perf_counter() - t0
    return wall, sum(r[3] for r in results) / wall, tuple(sum(r[i] for r in results) for i in range(3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model (its tokenizer cuts the chunks; default: indexer's default model)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per executor; the median is reported")
    parser.add_argument("--repeat", type=int, default=1, help="copies of the demo corpus (ids made unique)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from indexer.config import BuildConfig
    from indexer.pipeline import ShardJob, plan_build
    from indexer.components import usable_cores

    labels = {"single": "one process, one core", "local": "local executor (tokenizer on all cores)",
              "processes": f"processes executor x{args.workers}"}
    report = []
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        for layout, source in write_corpus(Path(tmp), args.shards, args.repeat).items():
            # the one file is cut into about as many byte ranges as there are files
            shard_size = -(-source.stat().st_size // args.shards) if source.is_file() else None
            config = BuildConfig(source=str(source), title_field="title", db=str(Path(tmp) / "db"), progress=False,
                                 sinks=[], shard_size=shard_size, **({"model": args.model} if args.model else {}))
            jobs = [ShardJob(config, s) for s in plan_build(config).source.shards()]
            print(f"{layout}: {len(jobs)} shards", file=sys.stderr)
            report.append((layout, len(jobs), *compare(jobs, args)))
    print(f"chunking wall time, median of {args.rounds} (load average now {os.getloadavg()[0]:.1f}; "
          f"{len(usable_cores())} usable cores):")
    for layout, shards, counts, med, busy in report:
        print(f"{layout} ({shards} shards; {counts[0]:,} documents → {counts[1]:,} chunks, {counts[2]:,} tokens):")
        for n, label in labels.items():
            print(f"  {label}: {med[n]:.3f} s, {counts[2] / med[n]:,.0f} tokens/s, {busy[n]:.2f} cores busy")
        print(f"  ratio processes / one process on one core: {med['processes'] / med['single']:.2f}x; "
              f"processes / local executor: {med['processes'] / med['local']:.2f}x")
    return 0


def compare(jobs, args) -> tuple[tuple[int, int, int], dict[str, float], dict[str, float]]:
    """Counts, and the median wall time and busy cores of each run (single, local, processes) over the rounds."""
    from indexer_local_executor import LocalExecutor, ProcessExecutor

    single = LocalExecutor()
    with ProcessExecutor(workers=args.workers) as pool:
        timed(single, jobs)
        cold, _, counts = timed(pool, jobs)
        print(f"  processes, first run (starts {args.workers} workers and loads their components): {cold:.2f} s",
              file=sys.stderr)
        runs = ("single", "local", "processes")
        times: dict[str, list[float]] = {n: [] for n in runs}
        busy: dict[str, list[float]] = {n: [] for n in runs}  # cores the jobs kept busy
        for r in range(args.rounds):
            for name in runs:
                # The Rust tokenizer reads TOKENIZERS_PARALLELISM at each batch call, in this process only
                # (the pool's workers hold their own environment).
                os.environ["TOKENIZERS_PARALLELISM"] = "false" if name == "single" else "true"
                wall, cores, got = timed(pool if name == "processes" else single, jobs)
                assert got == counts, f"{name} chunked differently: {got} != {counts}"
                times[name].append(wall)
                busy[name].append(cores)
            print(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} s ({busy[n][-1]:.2f} cores busy)"
                                                    for n in times), file=sys.stderr)
    return counts, {n: statistics.median(t) for n, t in times.items()}, \
        {n: statistics.median(b) for n, b in busy.items()}


if __name__ == "__main__":
    sys.exit(main())
