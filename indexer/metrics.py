"""Retrieval quality: nDCG@10, Recall@10, Recall@100 and MRR@10 of a TREC run against qrels.

Definitions follow trec_eval / BEIR: graded gains (the qrels score), log2 discount, ideal ranking from the
qrels; Recall and MRR count a document as relevant when its score is > 0. Queries with no relevant document in
the qrels are left out of the averages (and counted, so the report says how many).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from indexer.errors import ConfigError


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR ``query-id<TAB>corpus-id<TAB>score`` (with header) or TREC ``qid 0 docid rel``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"qrels file {p} does not exist")
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        # BEIR files are tab-separated, and document ids (Wikipedia titles) may contain spaces
        parts = [x.strip() for x in line.split("\t")] if "\t" in line else line.split()
        if not parts or (n == 1 and parts[0] in ("query-id", "qid", "query_id")):
            continue
        if len(parts) == 3:
            qid, docid, rel = parts
        elif len(parts) == 4:
            qid, _, docid, rel = parts
        else:
            raise ConfigError(f"{p} line {n}: expected 'query-id corpus-id score' or 'qid 0 docid rel'")
        try:
            qrels[qid][docid] = int(float(rel))
        except ValueError:
            raise ConfigError(f"{p} line {n}: relevance {rel!r} is not a number") from None
    return dict(qrels)


def read_run(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run file, each query's documents sorted by score (ties by rank order in the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"run file {p} does not exist")
    run: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        # tab-separated when ids hold spaces (indexer writes tabs then), else whitespace as in classic TREC files
        parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
        if not parts or not line.strip():
            continue
        if len(parts) != 6:
            raise ConfigError(f"{p} line {n}: expected 'qid Q0 docid rank score tag'")
        run[parts[0]].append((parts[2], float(parts[4]), n))
    return {q: [(d, s) for d, s, _ in sorted(docs, key=lambda x: (-x[1], x[2]))] for q, docs in run.items()}


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100, MRR@10 over the queries that have at least one relevant document."""
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not judged:
        raise ConfigError("the qrels hold no relevant (score > 0) judgement")
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in judged:
        ranked = [d for d, _ in run.get(q, [])]
        totals["ndcg@10"] += ndcg_at(ranked, qrels[q], 10)
        totals["recall@10"] += recall_at(ranked, qrels[q], 10)
        totals["recall@100"] += recall_at(ranked, qrels[q], 100)
        totals["mrr@10"] += mrr_at(ranked, qrels[q], 10)
    out = {k: v / len(judged) for k, v in totals.items()}
    out["queries"] = len(judged)
    out["queries_without_results"] = sum(1 for q in judged if q not in run)
    return out


def evaluate_files(qrels_path: str | Path, run_path: str | Path) -> dict[str, float]:
    return evaluate(read_qrels(qrels_path), read_run(run_path))
