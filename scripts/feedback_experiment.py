"""Does the feedback loop make retrieval better? A known-item experiment on Wikipedia lead summaries.

    python scripts/feedback_experiment.py ../shared/data/wiki-sample/summaries_en-us.json \
        [--articles 3000] [--seeds 0 1 2] [--threads 1] [--json results.json]

Task: the query is an article's short description ("1968 film by Stanley Kubrick"), the one relevant document is
the article (title + lead). Articles without a description are skipped. The articles are split 80/20 by a hash of
(split seed, article) — the split ``indexer finetune`` itself makes — so the 20% held out are never trained on.

For each training seed, on a fresh copy of the base index built with all-MiniLM-L6-v2:

1. ``feedback import`` the (description → article) pairs;
2. ``finetune`` (MultipleNegativesRankingLoss, duplicate-free batches, one hard negative per pair mined from the
   index) on the training pairs;
3. ``reembed --model <fine-tuned> --promote-if-better``: Recall@10 of the base table and of the new table on the
   held-out pairs; the alias ``current`` moves only if it rose.

Then once more with *shuffled* feedback: every training query points at a random other training article (the
held-out pairs stay true, so they still measure real quality). That feedback makes the model worse, and the alias
must not move.

It prints the figures per seed, the mean gain and the run-to-run spread (max - min of Recall@10 after fine-tuning
across seeds, same split), and exits non-zero if the gain is not larger than the spread in every seed, if the alias
did not move after a real fine-tune, or if it moved after the shuffled one.

The corpus is a deterministic subset (``--articles``, default 3,000: the described articles with the smallest
sha256 of their title) because fine-tuning on 2 shared CPU cores is slow (the default run took 34 minutes here:
6-9 minutes per fine-tune); ``--articles 0`` takes all 9,862.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_articles(path: Path, n: int) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    described = [a for a in data.values() if (a.get("description") or "").strip() and (a.get("extract") or "").strip()]
    described.sort(key=lambda a: hashlib.sha256(a["title"].encode()).hexdigest())
    return described[:n] if n else described


def write_inputs(articles: list[dict], folder: Path) -> tuple[Path, Path]:
    corpus, pairs = folder / "corpus.jsonl", folder / "pairs.jsonl"
    with corpus.open("w", encoding="utf-8") as c, pairs.open("w", encoding="utf-8") as p:
        for a in articles:
            c.write(json.dumps({"id": a["title"], "title": a["title"], "text": a["extract"]}, ensure_ascii=False) + "\n")
            p.write(json.dumps({"query": a["description"], "positive_id": a["title"], "source": "wiki-description"},
                               ensure_ascii=False) + "\n")
    return corpus, pairs


def shuffled_pairs(pairs: Path, out: Path, split_seed: int, holdout: float, seed: int) -> Path:
    """Training pairs with their articles permuted among themselves; held-out pairs untouched."""
    from indexer_feedback.judgements import is_heldout

    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines()]
    train = [r for r in rows if not is_heldout(r["positive_id"], split_seed, holdout)]
    targets = [r["positive_id"] for r in train]
    rng = random.Random(seed)
    while True:  # a derangement: no training query keeps its own article
        rng.shuffle(targets)
        if all(t != r["positive_id"] for t, r in zip(targets, train)):
            break
    for r, t in zip(train, targets):
        r["positive_id"], r["source"] = t, "shuffled"
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out


def _embedder_options(args) -> dict:
    return {"embedder": {"threads": args.threads}} if args.threads else {}


def run_once(base_db: Path, run_db: Path, pairs: Path, args, seed: int) -> dict:
    from indexer.config import BuildConfig
    from indexer_feedback import FeedbackLog
    from indexer_feedback.finetune import FinetuneSettings, finetune
    from indexer.versions import reembed

    shutil.rmtree(run_db, ignore_errors=True)
    shutil.copytree(base_db, run_db)
    FeedbackLog(str(run_db)).import_jsonl(pairs)
    t0 = time.perf_counter()
    record = finetune(FinetuneSettings(
        db=str(run_db), output=str(run_db.parent / (run_db.name + "-model")), seed=seed, split_seed=args.split_seed,
        holdout=args.holdout, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        negatives=args.negatives, max_seq_length=args.max_seq_length, eval_max_chunks=args.eval_max_chunks,
        progress=False,
    ))
    t1 = time.perf_counter()
    outcome = reembed(BuildConfig.load(None, model=record["output"], db=str(run_db), progress=False,
                                       options=_embedder_options(args)), "current", promote_if_better=True)
    t2 = time.perf_counter()
    return {
        "seed": seed, "before": outcome.before, "after": outcome.after, "promoted": outcome.promoted,
        "alias": outcome.alias_after, "new_table": outcome.table, "finetune_eval": record["eval"],
        "training": record["training"], "data": {k: v for k, v in record["data"].items() if k != "unresolved"},
        "reembed": {"source_reads": outcome.summary.source_reads, "chunked_documents": outcome.summary.chunked_documents,
                    "embedded_chunks": outcome.summary.embedded_chunks},
        "seconds": {"finetune": round(t1 - t0, 1), "reembed+eval": round(t2 - t1, 1)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summaries", type=Path, help="summaries_en-us.json (title -> {title, extract, description, topic})")
    ap.add_argument("--articles", type=int, default=3000, help="deterministic subset size (0 = all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (>= 3 for a spread)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--negatives", type=int, default=1)
    ap.add_argument("--max-seq-length", type=int, default=48, help="training truncation (the index keeps full chunks)")
    ap.add_argument("--eval-max-chunks", type=int, default=400, help="finetune's own quick held-out check")
    ap.add_argument("--no-shuffled", action="store_true", help="skip the shuffled-feedback run")
    ap.add_argument("--model", default=os.environ.get("INDEXER_MODEL", "sentence-transformers/all-MiniLM-L6-v2"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/indexer-feedback-experiment"))
    ap.add_argument("--threads", type=int, help="torch threads (on a CPU shared with other work, 1 can beat 2)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--mode", default="dense", choices=["dense", "text", "hybrid"],
                    help="how the tables are searched when scored (dense: the model's part alone)")
    args = ap.parse_args()
    if not args.summaries.is_file():
        ap.error(f"{args.summaries} does not exist (it is ../shared/data/wiki-sample/summaries_en-us.json here)")

    import indexer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    articles = load_articles(args.summaries, args.articles)
    corpus, pairs = write_inputs(articles, args.work)
    base_db = args.work / "base.lancedb"
    shutil.rmtree(base_db, ignore_errors=True)
    t0 = time.perf_counter()
    build = indexer.build(str(corpus), db=str(base_db), title_field="title", model=args.model, progress=False,
                          options=_embedder_options(args))
    build_s = time.perf_counter() - t0
    from indexer.retrieval import SearchSettings, record_settings
    from indexer.state import WorkDir

    # Every table is scored the way it is searched, and re-embedded tables inherit this: --mode decides.
    record_settings(WorkDir(base_db / "_indexer"), build.table, SearchSettings(args.mode), reason="feedback_experiment")
    print(f"corpus: {len(articles):,} described articles, {build.chunks:,} chunks, {build.tokens:,} tokens; "
          f"base index built in {build_s:.0f}s", flush=True)

    runs = []
    for seed in args.seeds:
        r = run_once(base_db, args.work / f"seed{seed}.lancedb", pairs, args, seed)
        runs.append(r)
        print(f"seed {seed}: recall@10 {r['before']['recall@10']:.4f} -> {r['after']['recall@10']:.4f}, "
              f"alias {'moved' if r['promoted'] else 'stayed'} ({r['seconds']})", flush=True)
    shuffled = None
    if not args.no_shuffled:
        bad = shuffled_pairs(pairs, args.work / "pairs-shuffled.jsonl", args.split_seed, args.holdout, seed=0)
        shuffled = run_once(base_db, args.work / "shuffled.lancedb", bad, args, args.seeds[0])

    after = [r["after"]["recall@10"] for r in runs]
    gains = [r["after"]["recall@10"] - r["before"]["recall@10"] for r in runs]
    spread = max(after) - min(after)
    print()
    print(f"Known-item retrieval, held-out {args.holdout:.0%} of {len(articles):,} articles "
          f"({runs[0]['before']['queries']} queries), all-MiniLM-L6-v2 fine-tuned on the other "
          f"{runs[0]['data']['train_relevant_pairs']:,} (description -> article) pairs")
    print("| run | Recall@10 before | Recall@10 after | gain | nDCG@10 before | nDCG@10 after | MRR@10 before | "
          "MRR@10 after | alias current |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs + ([dict(shuffled, seed="shuffled")] if shuffled else []):
        name = f"seed {r['seed']}" if r["seed"] != "shuffled" else "shuffled pairs"
        print(f"| {name} | {r['before']['recall@10']:.4f} | {r['after']['recall@10']:.4f} | "
              f"{r['after']['recall@10'] - r['before']['recall@10']:+.4f} | {r['before']['ndcg@10']:.4f} | "
              f"{r['after']['ndcg@10']:.4f} | {r['before']['mrr@10']:.4f} | {r['after']['mrr@10']:.4f} | "
              f"{'moved to the new table' if r['promoted'] else 'stayed'} |")
    print()
    print(f"mean gain {statistics.mean(gains):+.4f} (min {min(gains):+.4f}); run-to-run spread of Recall@10 after "
          f"fine-tuning {spread:.4f} (max - min over {len(runs)} seeds; stdev {statistics.pstdev(after):.4f})")
    ok = len(runs) >= 2 and min(gains) > spread and all(r["promoted"] for r in runs)
    if shuffled:
        print(f"shuffled feedback: Recall@10 {shuffled['before']['recall@10']:.4f} -> {shuffled['after']['recall@10']:.4f}, "
              f"alias {'MOVED' if shuffled['promoted'] else 'stayed'}")
        ok = ok and not shuffled["promoted"]
    print(f"re-embeds read {sum(r['reembed']['source_reads'] for r in runs)} source shards and chunked "
          f"{sum(r['reembed']['chunked_documents'] for r in runs)} documents")
    print("PASS" if ok else "FAIL: the gain is not larger than the spread, or the alias did not do what it should")
    if args.json:
        args.json.write_text(json.dumps({"articles": len(articles), "build_seconds": round(build_s, 1),
                                         "settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "shuffled": shuffled, "spread": spread, "gains": gains}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
