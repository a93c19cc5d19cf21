"""Latency and throughput of ``indexer serve`` beside the in-process baselines, in one run.

    python scripts/bench_serve.py --db demo.lancedb --db bench.lancedb

For each database and mode (dense, hybrid; k=10 chunks), three ways to answer the same queries:

* ``indexer.search``: the Python API, one call per query, as a script that imports indexer calls it (it opens
  the table and builds the embedder, loading the model, each call);
* ``Index.search``: the table opened once (``indexer.retrieval.open_index``), one query per call, the best an
  application can do in its own process, one request at a time; ``Index.search/t`` the same calls made from one
  worker thread, as the server makes them (on a busy machine the two differ, see docs/benchmarks.md);
* ``serve``: ``indexer serve`` started as a subprocess on 127.0.0.1, asked over HTTP by an aiohttp client with
  1, 8 and 32 requests in flight (each request one query, ``GET /search``).

It prints p50 and p99 latency at concurrency 1 and throughput (queries per second) at each concurrency, and the
mean number of queries per search call the server's micro-batcher made at each. The client runs on the same
cores as the server, as a co-located application would. Queries are the demo corpus' short descriptions
("Sprint race"), shuffled with a fixed seed; each measurement runs ``--seconds`` after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODES = ("dense", "hybrid")
CONCURRENCY = (1, 8, 32)


def demo_queries(n: int) -> list[str]:
    lines = (REPO / "data" / "demo" / "wiki-demo.jsonl").read_text(encoding="utf-8").splitlines()
    queries = sorted({d["description"] for d in map(json.loads, lines) if d.get("description")})
    random.Random(0).shuffle(queries)
    return queries[:n]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed_calls(fn, queries: list[str], seconds: float) -> list[float]:
    """Latencies (s) of ``fn(query)`` called one after another for ``seconds``."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end or len(latencies) < 5:
        start = time.perf_counter()
        fn(queries[i % len(queries)])
        latencies.append(time.perf_counter() - start)
        i += 1
    return latencies


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 99),
            "qps": len(latencies) / wall, "n": len(latencies)}


def in_process(db: str, mode: str, queries: list[str], seconds: float) -> dict[str, dict]:
    import indexer
    from indexer.retrieval import open_index

    index = open_index(db)
    settings, _ = index.resolve(mode=mode)
    worker = ThreadPoolExecutor(1)  # the server searches in a worker thread: the same, in-process
    out = {}
    for name, fn in (("indexer.search", lambda q: indexer.search(q, db=db, k=10, mode=mode)),
                     ("Index.search", lambda q: index.search([q], 10, settings=settings)),
                     ("Index.search/t", lambda q: worker.submit(index.search, [q], 10, None, None, settings).result())):
        timed_calls(fn, queries[-5:], 2)  # warm-up: the model, the table's files in the page cache
        start = time.perf_counter()
        latencies = timed_calls(fn, queries, seconds)
        out[name] = summary(latencies, time.perf_counter() - start)
    return out


class Server:
    def __init__(self, db: str, batch_wait_ms: float):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "indexer.cli", "serve", "--db", db, "--port", str(self.port), "--log-level",
             "warning", "--batch-wait-ms", str(batch_wait_ms)], stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self, session) -> None:
        for _ in range(1200):
            if self.proc.poll() is not None:
                raise SystemExit(f"indexer serve exited: {Path(self.log.name).read_text()}")
            try:
                async with session.get(self.url + "/health") as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.25)
        raise SystemExit("indexer serve did not start in 5 minutes")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        os.unlink(self.log.name)


async def load(session, url: str, mode: str, queries: list[str], concurrency: int, seconds: float) -> tuple[list[float], float]:
    """``concurrency`` clients, each sending its next query as soon as its last one is answered."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    end = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < end:
            q = queries[next(counter) % len(queries)]
            start = time.perf_counter()
            async with session.get(url + "/search", params={"q": q, "k": "10", "mode": mode}) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status}: {await r.text()}")
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


async def served(db: str, queries: list[str], seconds: float, batch_wait_ms: float) -> dict[str, dict]:
    import aiohttp

    server = Server(db, batch_wait_ms)
    out: dict[str, dict] = {}
    try:
        connector = aiohttp.TCPConnector(limit=max(CONCURRENCY))
        async with aiohttp.ClientSession(connector=connector) as session:
            await server.ready(session)
            for mode in MODES:
                await load(session, server.url, mode, queries[-5:], 4, 2)  # warm-up
                for c in CONCURRENCY:
                    async with session.get(server.url + "/health") as r:
                        before = await r.json()
                    latencies, wall = await load(session, server.url, mode, queries, c, seconds)
                    async with session.get(server.url + "/health") as r:
                        after = await r.json()
                    result = summary(latencies, wall)
                    result["batch"] = (after["queries"] - before["queries"]) / max(1, after["batches"] - before["batches"])
                    out[f"{mode}@{c}"] = result
    finally:
        server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", action="append", required=True, help="an index to measure (repeat)")
    ap.add_argument("--seconds", type=float, default=10, help="per measurement")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batch-wait-ms", type=float, default=2.0, help="indexer serve --batch-wait-ms")
    args = ap.parse_args()

    import indexer

    queries = demo_queries(args.queries)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}; "
          f"{len(queries)} queries, {args.seconds:g} s per measurement, k=10 chunks", flush=True)
    for db in args.db:
        rows = sum(t["rows"] for t in indexer.info(db))
        print(f"\n{db}: {rows:,} chunks", flush=True)
        serve = asyncio.run(served(db, queries, args.seconds, args.batch_wait_ms))
        header = (f"{'mode':<7} {'path':<15} {'p50 ms':>8} {'p99 ms':>8} " +
                  " ".join(f"{'q/s @' + str(c):>9}" for c in CONCURRENCY) + "   queries per search call @1/8/32")
        print(header)
        for mode in MODES:
            for name, r in in_process(db, mode, queries, args.seconds).items():
                print(f"{mode:<7} {name:<15} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['qps']:>9.1f}")
            one = serve[f"{mode}@1"]
            print(f"{mode:<7} {'serve (HTTP)':<15} {one['p50_ms']:>8.1f} {one['p99_ms']:>8.1f} "
                  + " ".join(f"{serve[f'{mode}@{c}']['qps']:>9.1f}" for c in CONCURRENCY) + "   "
                  + "/".join(f"{serve[f'{mode}@{c}']['batch']:.1f}" for c in CONCURRENCY), flush=True)
            print(f"{'':<7} {'':<15} {'':>8} {'':>8}   c=32 / c=1 throughput: "
                  f"{serve[f'{mode}@32']['qps'] / one['qps']:.1f}x", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
