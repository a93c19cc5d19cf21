"""Peak memory of a build at 10k vs 100k chunks: streaming means it should not grow with the corpus.

The demo corpus is repeated (ids made unique per copy) into one jsonl file — a single shard, the worst case for
a per-shard pipeline — and built with the real local model into LanceDB in a fresh subprocess each time; the
peak RSS of that subprocess is read from the kernel (ru_maxrss of the child).

    python scripts/bench_memory.py                    # 10,000 vs 100,000 chunks
    python scripts/bench_memory.py --small 2000 --large 20000 --max-tokens 32
    python scripts/bench_memory.py --build-args "--option lancedb.ann_min_rows=1000000000"   # no ANN index build
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
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


def build_peak_rss(corpus: Path, work: Path, args) -> tuple[float, dict, float]:
    """Runs one build in a child process; returns (peak RSS MiB, summary, seconds)."""
    summary = work / "summary.json"
    cmd = [sys.executable, "-m", "indexer.cli", "build", str(corpus), "--db", str(work / "db"), "--no-progress",
           "--max-tokens", str(args.max_tokens), "--overlap", "0", "--summary-json", str(summary)]
    if args.model:
        cmd += ["--model", args.model]
    cmd += shlex.split(args.build_args)
    t = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("ru_maxrss of children did not rise: run each size in a fresh process (--only)")
    return peak / 1024, json.loads(summary.read_text()), time.time() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10_000, help="chunks in the small run")
    ap.add_argument("--large", type=int, default=100_000, help="chunks in the large run")
    ap.add_argument("--max-tokens", type=int, default=32, help="short chunks keep the large run's embedding time low")
    ap.add_argument("--model", default=None)
    ap.add_argument("--build-args", default="", help="extra `indexer build` arguments for both runs")
    ap.add_argument("--only", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = ap.parse_args()

    if args.only is None:
        # ru_maxrss of children is a maximum over all of them: measure each size from its own parent process.
        results = {}
        for n in (args.small, args.large):
            out = subprocess.run([sys.executable, __file__, "--only", str(n), "--max-tokens", str(args.max_tokens),
                                  "--build-args", args.build_args] + (["--model", args.model] if args.model else []),
                                 check=True, capture_output=True, text=True)
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[n]
            print(f"{r['chunks']:>9,} chunks  {r['tokens']:>11,} tokens  peak RSS {r['rss_mib']:8.1f} MiB  ({r['seconds']:.0f}s)")
        a, b = results[args.small], results[args.large]
        growth = b["rss_mib"] / a["rss_mib"] - 1
        print(f"peak RSS, {b['chunks']:,} vs {a['chunks']:,} chunks: {growth:+.1%} (target: within 20%)")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probe = tmp / "probe"
        probe.mkdir()
        # one copy of the demo corpus tells how many chunks a copy makes under these settings
        one = tmp / "one.jsonl"
        write_corpus(one, 1, 1)
        from indexer import api

        s = api.build(str(one), db=str(probe / "db"), max_tokens=args.max_tokens, overlap=0, progress=False,
                      **({"model": args.model} if args.model else {}))
        corpus = tmp / "corpus.jsonl"
        write_corpus(corpus, args.only, s.chunks)
        work = tmp / "run"
        work.mkdir()
        rss, summary, seconds = build_peak_rss(corpus, work, args)
        print(json.dumps({"chunks": summary["chunks"], "tokens": summary["tokens"], "rss_mib": rss, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
