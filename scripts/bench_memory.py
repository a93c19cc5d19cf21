"""Peak memory of a build at 10k vs 100k chunks: streaming means it should not grow with the corpus.

The demo corpus is repeated (ids made unique per copy) into one jsonl file — a single shard, the worst case for
a per-shard pipeline — and built with the real local model into LanceDB in a fresh subprocess each time; the
peak RSS of that subprocess is read from the kernel (ru_maxrss of that child, from ``os.wait4``).

    python scripts/bench_memory.py                    # 10,000 vs 100,000 chunks
    python scripts/bench_memory.py --small 2000 --large 20000 --max-tokens 32
    python scripts/bench_memory.py --build-args "--option lancedb.ann_min_rows=1000000000"   # no ANN index build
    python scripts/bench_memory.py --sink-rows 14234,106755,400000   # the LanceDB sink alone, on random vectors
    python scripts/bench_memory.py --sink-rows 20000,106755 --sink-option ann_min_rows=1 --sink-option index_type=IVF_SQ
    python scripts/bench_memory.py --rebuild --build-args "--option lancedb.ann_min_rows=1000000000"
    MALLOC_ARENA_MAX=16 python scripts/bench_memory.py   # glibc's own arena limit on 2 cores, not indexer's cap

Besides the kernel's peak, the child's RSS is sampled every 0.25 s, so a build that ends with an ANN index build
(the sink prints how long it took) reports its peak before and during that step separately. ``--sink-rows``
streams N synthetic rows (384-dim random unit vectors) through the LanceDB sink's own ``write_shard`` and
``close`` (which builds the ANN index from ``ann_min_rows`` rows) and reports the memory each adds.
``--rebuild`` then edits one document of the corpus and builds again into the same work directory: the shard has
changed, so it is cut again and its unchanged chunks take their vectors from the shard's previous vector file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import re
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo" / "wiki-demo.jsonl"


def write_corpus(path: Path, chunks_wanted: int, chunks_per_copy: int) -> None:
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    copies = -(-chunks_wanted // chunks_per_copy)
    with path.open("w", encoding="utf-8") as f:
        for c in range(copies):
            for line in lines:
                rec = json.loads(line)
                rec["id"] = f"{rec['id']}~{c}"
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def edit_first_document(path: Path) -> None:
    """Appends a sentence to the corpus's first document: its shard changes, the other documents do not."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    rec["text"] += " This sentence was added to change the document."
    lines[0] = json.dumps(rec, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now (Linux), in MiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))
    except (FileNotFoundError, StopIteration):
        return 0.0


class Sampler:
    """Samples a process's RSS every ``interval`` seconds in a thread: ``(seconds since start, MiB)``."""

    def __init__(self, pid: int | str = "self", interval: float = 0.25):
        self.pid, self.interval, self.samples = pid, interval, []
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.start, rss_mib(self.pid)))
            self._stop.wait(self.interval)

    def mark(self) -> float:
        """A sample now; returns its time (the boundary between two phases)."""
        now = time.perf_counter() - self.start
        self.samples.append((now, rss_mib(self.pid)))
        return now

    def peak(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((r for t, r in self.samples if since <= t <= until), default=0.0)

    def stop(self) -> "Sampler":
        self._stop.set()
        self._thread.join()
        return self


INDEX_LINE = re.compile(r"built \S+ index on .* in ([0-9.]+) s")


def build_peak_rss(corpus: Path, work: Path, args) -> dict:
    """Runs one build in a child process; returns its peak RSS (kernel), its sampled peak before and during the
    ANN index build (if any), its summary and seconds."""
    summary = work / "summary.json"
    cmd = [sys.executable, "-m", "indexer.cli", "build", str(corpus), "--db", str(work / "db"), "--no-progress",
           "--max-tokens", str(args.max_tokens), "--overlap", "0", "--summary-json", str(summary)]
    if args.model:
        cmd += ["--model", args.model]
    cmd += shlex.split(args.build_args)
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    sampler = Sampler(child.pid)
    index_end = index_seconds = None
    for line in child.stderr:  # the sink says when it built an index, and how long that took
        if m := INDEX_LINE.search(line):
            index_end, index_seconds = time.perf_counter() - sampler.start, float(m.group(1))
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak (RUSAGE_CHILDREN: the most of all of them)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, cmd)
    seconds = time.perf_counter() - sampler.start
    sampler.stop()
    out = {"rss_mib": usage.ru_maxrss / 1024, "summary": json.loads(summary.read_text()), "seconds": seconds}
    if index_end is not None:
        out["before_index_mib"] = sampler.peak(until=index_end - index_seconds)
        out["index_mib"] = sampler.peak(since=index_end - index_seconds)
        out["index_seconds"] = index_seconds
    return out


def synthetic_model(dim: int):
    from indexer.types import ModelInfo

    return ModelInfo("synthetic", "local", "0" * 16, dim, "mean", True, 256)


def synthetic_batch(start: int, vectors):
    """Rows ``d<start>#0``, ... of one shard ``s`` in the sink's schema, carrying ``vectors`` (n x dim, float32)."""
    import pyarrow as pa

    from indexer.rows import chunks_to_batch
    from indexer.types import Chunk

    rows = range(start, start + len(vectors))
    chunks = [Chunk(f"d{i}#0", f"d{i}", 0, "x" * 150, 32, 0, 150, f"{i:016x}") for i in rows]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return chunks_to_batch(chunks, "s").append_column("vector", column)


def write_and_close(sink, dim: int, batches) -> dict:
    """As a build drives a sink: open, write one shard, return freed memory, close (which builds the ANN index
    from ``ann_min_rows`` rows). RSS before writing and before closing; peaks while writing and while closing."""
    from indexer.memory import return_freed_memory

    sink.open(synthetic_model(dim), {})
    base = rss_mib()
    sampler = Sampler()
    sink.write_shard("s", batches)
    return_freed_memory()
    written = sampler.mark()
    sink.close()
    closed = sampler.mark()
    sampler.stop()
    return {"base_mib": base, "write_mib": sampler.peak(until=written),
            "before_close_mib": sampler.peak(since=written, until=written),
            "close_mib": sampler.peak(since=written), "close_seconds": closed - written}


def sink_memory(rows: int, options: dict[str, str]) -> dict:
    """Streams ``rows`` random unit vectors through the LanceDB sink (one shard) and closes it."""
    import numpy as np

    from indexer.memory import limit_malloc_arenas
    from indexer_lancedb import LanceDBSink

    limit_malloc_arenas()  # as indexer build does (MALLOC_ARENA_MAX=16 in the environment: glibc's own 8 per core)
    dim, block = 384, 4096
    rng = np.random.default_rng(0)

    def batches():
        for start in range(0, rows, block):
            v = rng.standard_normal((min(block, rows - start), dim), dtype=np.float32)
            yield synthetic_batch(start, v / np.linalg.norm(v, axis=1, keepdims=True))

    with tempfile.TemporaryDirectory() as tmp:
        sink = LanceDBSink(db=tmp, table="t", **options)
        out = write_and_close(sink, dim, batches())
    return {"rows": rows, **out, "index": rows >= sink.ann_min_rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10_000, help="chunks in the small run")
    ap.add_argument("--large", type=int, default=100_000, help="chunks in the large run")
    ap.add_argument("--max-tokens", type=int, default=32, help="short chunks keep the large run's embedding time low")
    ap.add_argument("--model", default=None)
    ap.add_argument("--build-args", default="", help="extra `indexer build` arguments for both runs")
    ap.add_argument("--rebuild", action="store_true",
                    help="then edit one document and build again (unchanged chunks reuse their stored vectors)")
    ap.add_argument("--sink-rows", help="comma-separated row counts: measure the LanceDB sink alone at each")
    ap.add_argument("--sink-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a LanceDB sink option for --sink-rows (repeat), e.g. ann_min_rows=1 or index_type=IVF_PQ")
    ap.add_argument("--only", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    ap.add_argument("--only-sink", type=int, help=argparse.SUPPRESS)  # internal: the sink alone, in this process
    args = ap.parse_args()

    if args.only_sink is not None:
        print(json.dumps(sink_memory(args.only_sink, dict(o.split("=", 1) for o in args.sink_option))))
        return 0
    if args.sink_rows:
        print("LanceDB sink alone, one shard of N rows (384-dim vectors), RSS added over the process before writing"
              + (f" ({', '.join(args.sink_option)})" if args.sink_option else "") + ":")
        for n in (int(x) for x in args.sink_rows.split(",")):
            options = [a for o in args.sink_option for a in ("--sink-option", o)]
            out = subprocess.run([sys.executable, __file__, "--only-sink", str(n), *options], check=True,
                                 capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            close = (f"close (ANN index build) +{r['close_mib'] - r['base_mib']:.0f} MiB in {r['close_seconds']:.0f} s"
                     if r["index"] else "close: no ANN index (below ann_min_rows)")
            print(f"{r['rows']:>9,} rows: write_shard +{r['write_mib'] - r['base_mib']:.0f} MiB, {close}")
        return 0

    if args.only is None:
        # each size from its own process, which cuts its corpus and starts the build
        results = {}
        for n in (args.small, args.large):
            out = subprocess.run([sys.executable, __file__, "--only", str(n), "--max-tokens", str(args.max_tokens),
                                  "--build-args", args.build_args] + (["--model", args.model] if args.model else [])
                                 + (["--rebuild"] if args.rebuild else []),
                                 check=True, capture_output=True, text=True)
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[n]
            index = (f"; sampled {r['before_index_mib']:,.0f} MiB before the ANN index build, {r['index_mib']:,.0f} "
                     f"MiB during its {r['index_seconds']:.0f} s" if "index_mib" in r else "; no ANN index built")
            print(f"{r['chunks']:>9,} chunks  {r['tokens']:>11,} tokens  peak RSS {r['rss_mib']:8.1f} MiB  "
                  f"({r['seconds']:.0f}s{index})")
            if "rebuild" in r:
                rb = r["rebuild"]
                print(f"{'':>9}   rebuilt with one document edited: {rb['embedded']:,} chunks embedded, "
                      f"{rb['reused']:,} reused, peak RSS {rb['rss_mib']:8.1f} MiB ({rb['seconds']:.0f}s)")
        a, b = results[args.small], results[args.large]
        growth = b["rss_mib"] / a["rss_mib"] - 1
        print(f"peak RSS, {b['chunks']:,} vs {a['chunks']:,} chunks: {growth:+.1%} (target: within 20%)")
        if args.rebuild:
            growth = b["rebuild"]["rss_mib"] / a["rebuild"]["rss_mib"] - 1
            print(f"peak RSS of the rebuild, {b['chunks']:,} vs {a['chunks']:,} chunks: {growth:+.1%}")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # one copy of the demo corpus tells how many chunks a copy makes under these settings (chunked, not embedded)
        one = tmp / "one.jsonl"
        write_corpus(one, 1, 1)
        from indexer.config import BuildConfig
        from indexer.pipeline import count_chunks, plan_build

        plan = plan_build(BuildConfig(source=str(one), db=str(tmp / "probe"), max_tokens=args.max_tokens, overlap=0,
                                      sinks=[], progress=False, **({"model": args.model} if args.model else {})))
        per_copy = count_chunks(plan, plan.source.shards())[1]
        corpus = tmp / "corpus.jsonl"
        write_corpus(corpus, args.only, per_copy)
        work = tmp / "run"
        work.mkdir()
        r = build_peak_rss(corpus, work, args)
        summary = r.pop("summary")
        if args.rebuild:
            edit_first_document(corpus)
            again = build_peak_rss(corpus, work, args)
            r["rebuild"] = {"rss_mib": again["rss_mib"], "seconds": again["seconds"],
                            "embedded": again["summary"]["embedded_chunks"], "reused": again["summary"]["reused_chunks"]}
        print(json.dumps({"chunks": summary["chunks"], "tokens": summary["tokens"], **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
