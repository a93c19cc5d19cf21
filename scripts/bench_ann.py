"""The LanceDB sink's ANN index against exact search, on an index's own vectors: recall@k, build time, the memory
the build adds, and query speed, one line per index setting.

    indexer build corpus.jsonl --db ann.lancedb --option lancedb.ann_min_rows=1000000000   # any indexer table
    python scripts/bench_ann.py --db ann.lancedb
    python scripts/bench_ann.py --db ann.lancedb --config "" --config rows_per_partition=8192 \\
        --config index_type=IVF_SQ
    python scripts/bench_ann.py --db a.lancedb --db b.lancedb    # the vectors of both tables, pooled

The vectors are split into queries (``--queries`` rows drawn with a fixed seed) and the rest, which each setting
indexes in a fresh table of its own, built in a child process through the sink's own ``close()`` (the code path
of ``indexer build``). A ``--config`` is a comma-separated list of LanceDB sink options; ``""`` is the default
index. The exact top ``k`` of every query comes from numpy over the same vectors (dot products of the
normalised vectors: cosine); recall@k is the share of it that the sink's ``search()`` returns. The first line is
the table without an index (the sink's flat search), which must read 1.000; ``parts`` is the number of IVF
partitions lance built (from a query plan). Query speed: one call with every query (the sink's batched search),
and single queries one call each (the median and the 95th percentile of 200). Memory: the child's resident
memory sampled every 0.25 s during the build, over what it held before.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import synthetic_batch, write_and_close  # noqa: E402

BLOCK = 8192  # rows per batch written to a setting's table


def load_vectors(db: str, table: str) -> np.ndarray:
    """The table's vectors, normalised, float32 (the sink stores normalised vectors; this guards the cosine)."""
    from indexer.rows import vector_rows
    from indexer_lancedb import VECTOR, LanceDBSink

    tbl = LanceDBSink(db=db, table=table)._table()
    vectors = vector_rows(tbl.search().select([VECTOR]).limit(tbl.count_rows()).to_arrow()[VECTOR]).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of each query's ``k`` most similar base vectors."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[start : start + 256] = np.take_along_axis(top, order, axis=1)
    return out


def parse_config(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item.strip())


def run_setting(vectors_file: str, config: dict[str, str], k: int, queries: int) -> dict:
    """In this (child) process: index the base vectors with the sink's options, then search with every query."""
    from indexer.memory import limit_malloc_arenas
    from indexer_lancedb import LanceDBSink

    limit_malloc_arenas()  # as indexer build does
    data = np.load(vectors_file)
    base, query = data["base"], data["queries"][:queries]
    batches = (synthetic_batch(start, base[start : start + BLOCK]) for start in range(0, len(base), BLOCK))
    out: dict = {"config": config, "rows": len(base)}
    with tempfile.TemporaryDirectory() as tmp:
        sink = LanceDBSink(db=tmp, table="t", **config)
        sink.check()
        written = write_and_close(sink, base.shape[1], batches)  # close() builds the index, unless flat
        out["build_seconds"] = written["close_seconds"]
        out["build_mib"] = written["close_mib"] - written["before_close_mib"]

        sink.search(query[:8], k)  # warm: opens the table and the index
        plan = sink._table().search(query[0]).limit(k).analyze_plan()
        out["partitions"] = int(m.group(1)) if (m := re.search(r"partitions_ranked=(\d+)", plan)) else None
        start = time.perf_counter()
        hits = sink.search(query, k)
        out["batch_qps"] = len(query) / (time.perf_counter() - start)
        single = []
        for q in query[:200]:
            start = time.perf_counter()
            sink.search(q, k)
            single.append(time.perf_counter() - start)
        out["single_ms_p50"] = 1000 * float(np.median(single))
        out["single_ms_p95"] = 1000 * float(np.percentile(single, 95))
    out["found"] = [[int(h.doc_id[1:]) for h in row] for row in hits]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", action="append", help="a LanceDB folder written by indexer build (repeat to pool the "
                    "vectors of several, e.g. one corpus chunked at two sizes)")
    ap.add_argument("--table", help="the table in each --db (default: the first `indexer info` lists)")
    ap.add_argument("--config", action="append", metavar="KEY=VALUE,...",
                    help='LanceDB sink options of one setting (repeat; "" is the default index); default: ""')
    ap.add_argument("--queries", type=int, default=1000, help="rows held out as queries")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=2, metavar=("VECTORS", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(run_setting(args.child[0], json.loads(args.child[1]), args.k, args.queries)))
        return 0

    if not args.db:
        ap.error("--db is required")
    from indexer_lancedb import LanceDBSink

    tables = [(db, args.table or LanceDBSink(db=db, table="_").tables()[0]["table"]) for db in args.db]
    vectors = np.concatenate([load_vectors(db, table) for db, table in tables])
    if len(vectors) <= args.queries + args.k:
        raise SystemExit(f"{len(vectors):,} vectors; need more than --queries + --k")
    order = np.random.default_rng(args.seed).permutation(len(vectors))
    queries, base = vectors[order[: args.queries]], vectors[np.sort(order[args.queries :])]
    truth = exact_top_k(base, queries, args.k)
    settings = [None] + (args.config or [""])  # None: no index, the flat search
    default_type = LanceDBSink(db=args.db[0], table="_").index_type
    print(f"{' + '.join(f'{db}:{table}' for db, table in tables)}: {len(base):,} vectors of {base.shape[1]} "
          f"dimensions indexed, {len(queries):,} held out as queries, recall@{args.k} against numpy's exact "
          f"top {args.k}")
    print(f"{'setting':<36} {'parts':>5} {'recall':>7} {'build s':>8} {'build MiB':>10} {'batch q/s':>10} "
          f"{'1 query ms':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/vectors.npz"
        np.savez(path, base=base, queries=queries)
        for setting in settings:
            config = {"ann_min_rows": 10**12} if setting is None else {"ann_min_rows": 1, **parse_config(setting)}
            done = subprocess.run(
                [sys.executable, __file__, "--child", path, json.dumps(config), "--k", str(args.k),
                 "--queries", str(args.queries)], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"setting {setting!r} failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            found = r["found"]
            recall = np.mean([len(set(f) & set(t)) / args.k for f, t in zip(found, truth.tolist())])
            name = "no index (flat)" if setting is None else setting or f"default ({default_type})"
            build = f"{'-':>8} {'-':>10}" if setting is None else f"{r['build_seconds']:>8.1f} {r['build_mib']:>+10.0f}"
            print(f"{name:<36} {r['partitions'] or '-':>5} {recall:>7.3f} {build} {r['batch_qps']:>10,.0f} "
                  f"{r['single_ms_p50']:>7.1f} (p95 {r['single_ms_p95']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
