"""One big JSONL file: how long planning its shards takes, and the peak memory of chunking its shards, for a
~2 GB file against a ~200 MB one (the shards are the same size, so memory should not follow the file's size).

    python scripts/bench_bigfile.py                              # ~2 GB and ~200 MB, 64MB shards, 2 shards chunked
    python scripts/bench_bigfile.py --gb 2 --small-mb 200 --shard-size 64MB --chunk-shards 3
    python scripts/bench_bigfile.py --chunk-shards 0             # chunk every shard of both files (slow)

Both files are written at run time into a temporary folder (deleted afterwards; never committed), from the
10,033 Wikipedia summaries of shared/data/wiki-sample repeated with unique ids. Each measurement runs in a fresh
child process: ``plan`` lists the file's shards through the jsonl source, exactly as a build plans them;
``chunk`` reads and cuts, with the build's token chunker and nothing embedded, the first ``--chunk-shards``
shards minus one and the file's last shard (so the reader seeks to the end of the file), or every shard with
``--chunk-shards 0``. Peak RSS is the child's own, from the kernel (``ru_maxrss`` from ``os.wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUMMARIES = REPO.parent / "shared" / "data" / "wiki-sample" / "summaries_en-us.json"


def write_corpus(path: Path, size: int) -> int:
    """A JSONL file of about ``size`` bytes; returns its documents."""
    lines = [json.dumps({"title": s["title"], "text": s["extract"]}, ensure_ascii=False)[1:]
             for s in json.loads(SUMMARIES.read_text()).values()]
    written = docs = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            for line in lines:
                text = f'{{"id": "w{docs}", {line}\n'
                f.write(text)
                written += len(text.encode())
                docs += 1
                if written >= size:
                    break
    return docs


def child(mode: str, corpus: str, shard_size: str, chunk_shards: int, model: str | None) -> dict:
    from indexer.config import BuildConfig
    from indexer.pipeline import count_chunks, plan_build

    config = BuildConfig(source=corpus, shard_size=shard_size, sinks=[], db=tempfile.mkdtemp(prefix="bench-bigfile-"),
                         progress=False, **({"model": model} if model else {}))
    t0 = time.perf_counter()
    plan = plan_build(config)
    t1 = time.perf_counter()
    shards = plan.source.shards()
    t2 = time.perf_counter()
    out = {"shards": len(shards), "plan_seconds": t2 - t1, "setup_seconds": t1 - t0}
    if mode == "chunk":
        chosen = shards if chunk_shards == 0 else shards[: chunk_shards - 1] + shards[-1:]
        docs, chunks, tokens = count_chunks(plan, chosen)
        out.update(chunked_shards=len(chosen), chunked_bytes=sum(s.size for s in chosen), documents=docs,
                   chunks=chunks, tokens=tokens, chunk_seconds=time.perf_counter() - t2)
    return out


def measure(mode: str, corpus: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(corpus), "--shard-size", args.shard_size,
           "--chunk-shards", str(args.chunk_shards)] + (["--model", args.model] if args.model else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed")
    return {**json.loads(out), "rss_mib": usage.ru_maxrss / 1024}


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(wanted)}), {len(os.sched_getaffinity(0))} usable cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="size of the big file in GB (10^9 bytes)")
    parser.add_argument("--small-mb", type=float, default=200.0, help="size of the small file in MB")
    parser.add_argument("--shard-size", default="64MB")
    parser.add_argument("--chunk-shards", type=int, default=2, help="shards chunked per file (0: all)")
    parser.add_argument("--model", help="model whose tokenizer cuts the chunks (default: indexer's default model)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.shard_size, args.chunk_shards, args.model)))
        return 0

    print(f"machine: {cpu()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-bigfile-") as tmp:
        rows = []
        for name, size in (("small", int(args.small_mb * 1e6)), ("big", int(args.gb * 1e9))):
            corpus = Path(tmp) / f"{name}.jsonl"
            t0 = time.perf_counter()
            docs = write_corpus(corpus, size)
            print(f"{name}: wrote {corpus.stat().st_size / 1e6:,.0f} MB, {docs:,} documents in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            plan = measure("plan", corpus, args)
            chunk = measure("chunk", corpus, args)
            rows.append((name, corpus.stat().st_size, plan, chunk))
            corpus.unlink()  # room for the next one
    print(f"\n--shard-size {args.shard_size}; chunked: "
          + ("every shard" if args.chunk_shards == 0 else f"the first {args.chunk_shards - 1} and the last shard"))
    print(f"{'file':>6} {'MB':>7} {'shards':>6} {'plan s':>7} {'chunked MB':>10} {'chunks':>9} {'tokens':>11} "
          f"{'chunk s':>8} {'peak RSS MiB':>12}")
    for name, size, plan, chunk in rows:
        print(f"{name:>6} {size / 1e6:>7,.0f} {plan['shards']:>6} {plan['plan_seconds']:>7.3f} "
              f"{chunk['chunked_bytes'] / 1e6:>10,.0f} {chunk['chunks']:>9,} {chunk['tokens']:>11,} "
              f"{chunk['chunk_seconds']:>8.1f} {chunk['rss_mib']:>12,.0f}")
    small, big = rows[0][3]["rss_mib"], rows[1][3]["rss_mib"]
    print(f"peak RSS big / small while chunking: {big / small:.2f}; planning alone peaked at "
          f"{rows[0][2]['rss_mib']:,.0f} / {rows[1][2]['rss_mib']:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
