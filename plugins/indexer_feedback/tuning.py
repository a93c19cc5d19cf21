"""Search settings learned from feedback: ``indexer tune-search`` scores every search mode and fusion setting of a
grid on a table's judged queries and records the winner with the table, which ``indexer search``, the API and
``reembed --promote-if-better`` then use.

Which judgements (``pairs``): a table whose model ``indexer finetune`` trained on this feedback is scored on the
held-out side of that fine-tune's split only (documents held out by a hash of seed and document, as its record
says), never on what its model was trained on; documents judged relevant on the training side are dropped from
the rankings of the held-out queries, neither counted as relevant nor allowed to push held-out documents down. A
table whose model never saw the feedback is scored on every pair: to it they are all held out, and a fifth of
them is too few to choose by (on half the DBpedia-entity subset, 15 held-out queries picked a hybrid that lost
0.025 nDCG@10 to dense on the other half, every pair picked dense: docs/benchmarks.md). ``pairs="heldout"`` or
``"all"`` forces either.

Every setting ranks the same candidates: each query's dense and text rankings are fetched once, deep enough for
the fused top 100, and fused per setting in memory, so the grid costs one search per query and mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from indexer.errors import ConfigError
from indexer.retrieval import SearchSettings
from indexer.versions import METRICS

TEXT_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
# Order matters on a tie: the simpler setting listed first wins.
GRID = [SearchSettings("dense"), SearchSettings("text"),
        *[SearchSettings("hybrid", fusion="rrf", text_weight=w) for w in TEXT_WEIGHTS],
        *[SearchSettings("hybrid", fusion="convex", text_weight=w) for w in TEXT_WEIGHTS]]
K = 100  # documents ranked per query: Recall@100 needs them
FEW_QUERIES = 20


PAIRS = ("auto", "heldout", "all")


@dataclass
class Tuning:
    table: str
    metric: str
    judgements: str  # which ones: "held-out" or "all"
    queries: int
    scores: list[tuple[SearchSettings, dict[str, float]]] = field(default_factory=list)
    best: SearchSettings | None = None
    previous: SearchSettings | None = None
    recorded: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "metric": self.metric, "judgements": self.judgements, "queries": self.queries,
                "best": self.best.to_dict() if self.best else None,
                "previous": self.previous.to_dict() if self.previous else None, "recorded": self.recorded,
                "scores": [{"settings": s.to_dict(), **m} for s, m in self.scores], "notes": self.notes}

    def render(self) -> str:
        lines = [f"table {self.table}: {self.queries} judged queries ({self.judgements} judgements), documents by "
                 f"best chunk"]
        lines.append(f"  {'search':<46} " + " ".join(f"{m:>10}" for m in METRICS))
        for settings, m in self.scores:
            mark = "  <- best" if settings == self.best else ""
            lines.append(f"  {settings.describe():<46} " + " ".join(f"{m[k]:>10.4f}" for k in METRICS) + mark)
        lines.extend(self.notes)
        if self.best is not None:
            verb = "recorded" if self.recorded else "not recorded (--dry-run)"
            lines.append(f"{verb}: table {self.table} is searched in mode {self.best.describe()} by {self.metric} "
                         "unless a search says otherwise")
        return "\n".join(lines)


def fine_tune_split(model: str) -> dict[str, Any] | None:
    """The held-out split (``{"heldout_fraction", "seed"}``) of the fine-tune that made ``model``, if it is one."""
    from indexer_feedback.finetune import read_record

    return (read_record(model) or {}).get("split")


def tune_search(db: str, table: str | None = None, *, metric: str = "ndcg@10", pairs: str = "auto",
                holdout: float | None = None, split_seed: int | None = None, store: str = "lancedb",
                work_dir: str | None = None, dry_run: bool = False) -> Tuning:
    """Score :data:`GRID` on the table's judged queries and record the best setting by ``metric``. ``holdout``
    and ``split_seed`` default to the fine-tune's split (else 0.2 and 0, as ``indexer finetune``)."""
    from indexer.metrics import evaluate
    from indexer.retrieval import candidate_depth, open_index, rank, record_settings
    from indexer_feedback.judgements import is_heldout, qrels_of, resolve
    from indexer_feedback.store import FeedbackLog
    from indexer.versions import work_of

    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)} (got {metric!r})")
    if pairs not in PAIRS:
        raise ConfigError(f"--pairs must be one of {', '.join(PAIRS)} (got {pairs!r})")
    index = open_index(db, table, work_dir=work_dir)
    stored = FeedbackLog(db, store=store).pairs()
    if not stored:
        raise ConfigError(f"no feedback pairs in {db}: add some with `indexer feedback add` or `indexer feedback "
                          "import`")
    split = fine_tune_split(index.meta["model"]["name"]) or {}
    holdout = split.get("heldout_fraction", 0.2) if holdout is None else holdout
    split_seed = split.get("seed", 0) if split_seed is None else split_seed
    all_pairs = pairs == "all" or (pairs == "auto" and not split)
    judgements, _, _ = resolve(stored, index.sink)
    if all_pairs:
        chosen, trained = judgements, []
    else:
        chosen = [j for j in judgements if is_heldout(j.doc_id, split_seed, holdout)]
        trained = [j for j in judgements if not is_heldout(j.doc_id, split_seed, holdout)]
    queries, qrels = qrels_of(chosen)
    qids = sorted(q for q, rels in qrels.items() if any(r > 0 for r in rels.values()))
    if not qids:
        which = "" if all_pairs else (f" among the held-out {holdout:.0%} of judged documents (split seed "
                                      f"{split_seed}); --pairs all scores every pair")
        raise ConfigError(f"no query has a relevant judgement{which}")
    hidden: dict[str, set[str]] = {}
    for j in trained:
        if j.relevance > 0:
            hidden.setdefault(j.qid, set()).add(j.doc_id)

    out = Tuning(index.table, metric, "all" if all_pairs else "held-out", len(qids), previous=index.settings
                 if index.origin == "recorded" else None)
    if len(qids) < FEW_QUERIES:
        out.notes.append(f"note: only {len(qids)} judged queries; a winner on so few may not hold on new queries")
    grid = [s for s in GRID if s.mode in index.sink.search_modes]
    texts = [queries[q] for q in qids]
    try:
        dense, text = index.candidates(texts, candidate_depth(K, True, "hybrid"), "hybrid")
    except ConfigError as exc:  # e.g. a table built before full-text indexes were the default
        out.notes.append(f"note: dense mode only: {exc}")
        grid = [s for s in grid if s.mode == "dense"]
        dense, text = index.candidates(texts, candidate_depth(K, True, "dense"), "dense")
    for settings in grid:
        run = {}
        for q, d, t in zip(qids, dense, text):
            ranked = rank(d, t, K + len(hidden.get(q, ())), True, settings)
            run[q] = [(h.doc_id, h.score) for h in ranked if h.doc_id not in hidden.get(q, ())][:K]
        out.scores.append((settings, evaluate({q: qrels[q] for q in qids}, run)))
    out.best = max(out.scores, key=lambda sm: sm[1][metric])[0]  # max keeps the first of equals
    if not dry_run:
        best_scores = dict(out.scores)[out.best]
        record_settings(work_of(db, work_dir), index.table, out.best, metric=metric,
                        judgements=out.judgements, queries=out.queries, scores=best_scores,
                        split={"holdout": holdout, "seed": split_seed} if not all_pairs else None)
        out.recorded = True
    return out
