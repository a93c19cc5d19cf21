"""Model-versioned tables, a core concept: re-embed the stored chunks into a new table, score old and new on
held-out judgements, move the alias that searches use (``current``) only when the new one is better, and prune
versions nobody points at (commands ``indexer reembed``, ``alias set|list``, ``prune`` in :mod:`indexer.cli`).

Every table stays queryable by name (``indexer search --table NAME``) until ``indexer prune`` drops it.

Judgements come from an argument (:func:`heldout_from_files`: BEIR qrels and queries) or from the
``heldout_judgements`` hook, which a plugin answers for a model it made — the feedback plugin does for a model
``indexer finetune`` saved, with the split it held out. The core knows nothing of feedback stores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.errors import ConfigError

if TYPE_CHECKING:  # the CLI imports this module for its names; pyarrow (through the run state) loads on use
    from indexer.config import BuildConfig
    from indexer.state import WorkDir

ALIAS = "current"
METRICS = ("recall@10", "ndcg@10", "mrr@10", "recall@100")
#: The sink whose tables are versioned (it lists, and drops, tables).
SINK = "lancedb"


def work_of(db: str, work_dir: str | None = None) -> WorkDir:
    """The run state of ``db``: ``work_dir``, else ``<db>/_indexer``."""
    from indexer.state import WorkDir

    return WorkDir(work_dir or Path(db) / "_indexer")


@dataclass
class Heldout:
    """Judgements to score tables on: qid → query text, qid → {doc id: relevance}, and where they came from."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    origin: str


def heldout_from_model(model: str, host: Any = None) -> Heldout | None:
    """The held-out judgements a plugin keeps for ``model`` (the ``heldout_judgements`` hook; first answer wins)."""
    from indexer.plugins import get_host

    return (host or get_host()).hook.heldout_judgements(model=model)


def heldout_from_files(qrels: str, queries: str) -> Heldout:
    """Judgements from a BEIR/TREC qrels file and the queries file its query ids refer to (``--qrels``, ``--queries``)."""
    from indexer.metrics import read_qrels
    from indexer.retrieval import read_queries

    judged = read_qrels(qrels)
    texts = read_queries(queries)
    missing = sorted(set(judged) - set(texts))
    if missing:
        raise ConfigError(f"{len(missing)} query id(s) of {qrels} are not in {queries} (e.g. {missing[0]})")
    return Heldout({q: texts[q] for q in judged}, {q: {d: float(r) for d, r in docs.items()} for q, docs in judged.items()},
                   f"{qrels}")


def score_table(db: str, table: str, heldout: Heldout, work_dir: str | None = None) -> dict[str, Any]:
    """indexer eval's metrics of ``table`` (documents ranked by their best chunk) on the held-out judgements,
    searched the way the table is searched (its recorded settings, else the default); ``"search"`` names them."""
    from indexer.metrics import evaluate
    from indexer.retrieval import open_index

    index = open_index(db, table, work_dir=work_dir)
    qids = sorted(heldout.queries)
    results = index.search([heldout.queries[q] for q in qids], k=100, by_doc=True)
    run = {q: [(h.doc_id, h.score) for h in hits] for q, hits in zip(qids, results)}
    return {**evaluate(heldout.qrels, run), "search": index.settings.describe()}


def inherit_search_settings(work: WorkDir, from_table: str, table: str) -> None:
    """A re-embedded table is searched as the table it came from until tune-search says otherwise: which mode
    and fusion win depends on the corpus and its queries more than on the model."""
    from indexer.retrieval import SearchSettings, record_settings, recorded_settings

    old = recorded_settings(work, from_table)
    if old is not None and recorded_settings(work, table) is None:
        record_settings(work, table, SearchSettings.from_dict(old["settings"]), inherited_from=from_table)


@dataclass
class ReembedOutcome:
    summary: Any
    from_table: str
    table: str
    heldout: str | None = None
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    metric: str = "recall@10"
    promoted: bool = False
    alias_before: str | None = None
    alias_after: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict(), "from_table": self.from_table, "table": self.table,
                "heldout": self.heldout, "before": self.before, "after": self.after, "metric": self.metric,
                "promoted": self.promoted, "alias": ALIAS, "alias_before": self.alias_before,
                "alias_after": self.alias_after, "reason": self.reason}

    def render(self) -> str:
        lines = []
        if self.before and self.after:
            lines.append(f"held-out evaluation ({self.before['queries']} queries from {self.heldout}):")
            lines.append(f"  {'metric':<11} {'before':>8} {'after':>8} {'change':>8}")
            for m in METRICS:
                mark = "  <- decides" if m == self.metric else ""
                lines.append(f"  {m:<11} {self.before[m]:>8.4f} {self.after[m]:>8.4f} {self.after[m] - self.before[m]:>+8.4f}{mark}")
            lines.append(f"  before = table {self.from_table} searched {self.before.get('search', 'dense')}, "
                         f"after = table {self.table} searched {self.after.get('search', 'dense')}")
        lines.append(self.reason)
        return "\n".join(lines)


def reembed(config: BuildConfig, from_table: str | None = None, *, promote_if_better: bool = False,
            metric: str = "recall@10", heldout: Heldout | None = None, min_gain: float = 0.0,
            host: Any = None) -> ReembedOutcome:
    """Re-embed the chunks stored for ``from_table`` (a table or alias; None: the alias ``current``, else the only
    table) with ``config.model`` into a new table,
    score both on held-out judgements and, with ``promote_if_better``, point the alias ``current`` at the new
    table only when ``metric`` rose by more than ``min_gain``. Without ``heldout``, the judgements a plugin keeps
    for ``config.model`` (:func:`heldout_from_model`) are used."""
    from indexer import pipeline
    from indexer.retrieval import resolve_table
    from indexer.state import WorkDir

    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)} (got {metric!r})")
    work = WorkDir(config.work_path)
    source_table = resolve_table(config.db, from_table, work_dir=str(work.root))
    heldout = heldout or heldout_from_model(config.model, host)
    alias_before = work.aliases().get(ALIAS)
    if alias_before is None:
        # Searches without --table went to the only table; once a second one exists they must keep going there.
        work.set_alias(ALIAS, source_table)
        alias_before = source_table
    summary = pipeline.reembed(config, source_table, host)
    out = ReembedOutcome(summary, source_table, summary.table, metric=metric, alias_before=alias_before,
                         alias_after=alias_before)
    if summary.table == source_table:
        out.reason = f"the model is the one table {source_table} already holds: nothing to compare"
        return out
    inherit_search_settings(work, source_table, summary.table)
    if heldout is not None:
        out.heldout = heldout.origin
        out.before = score_table(config.db, source_table, heldout, str(work.root))
        out.after = score_table(config.db, summary.table, heldout, str(work.root))
        work.write_eval_record(summary.table, {"time": time.time(), "against": out.from_table, "heldout": out.heldout,
                                               "before": out.before, "after": out.after})
    if not promote_if_better:
        out.reason = (f"alias {ALIAS} still points at {alias_before}; `indexer alias set {ALIAS} {summary.table}` "
                      "promotes the new table (or rerun with --promote-if-better)")
        return out
    if out.before is None:
        out.reason = (f"alias {ALIAS} stays on {alias_before}: no held-out judgements to compare on (the model has no "
                      "fine-tune record; pass --qrels and --queries)")
        return out
    gain = out.after[metric] - out.before[metric]
    if gain > min_gain:
        work.set_alias(ALIAS, summary.table)
        out.promoted, out.alias_after = True, summary.table
        out.reason = f"alias {ALIAS} -> {summary.table} ({metric} {out.before[metric]:.4f} -> {out.after[metric]:.4f})"
    else:
        out.reason = (f"alias {ALIAS} stays on {alias_before}: {metric} did not improve "
                      f"({out.before[metric]:.4f} -> {out.after[metric]:.4f}, {gain:+.4f}); "
                      f"table {summary.table} stays queryable with --table until `indexer prune`")
    return out


# --------------------------------------------------------------------------------------------------------------
# Aliases and pruning
# --------------------------------------------------------------------------------------------------------------


def _tables(db: str) -> list[dict[str, Any]]:
    from indexer.plugins import get_host

    return get_host().component("sink", SINK)(db=db, table="").tables()


def set_alias(db: str, alias: str, table: str, work_dir: str | None = None) -> str:
    """Point ``alias`` at ``table`` (a table name or another alias); returns the table."""
    work = work_of(db, work_dir)
    target = work.aliases().get(table, table)
    names = [t["table"] for t in _tables(db)]
    if target not in names:
        raise ConfigError(f"no table {target!r} in {db}; tables there: {', '.join(names) or 'none'}")
    if not alias or not all(c.isalnum() or c in "-_." for c in alias):
        raise ConfigError(f"alias {alias!r} may contain only letters, digits, '-', '_' and '.'")
    if alias in names:
        raise ConfigError(f"{alias!r} is the name of a table; pick another alias")
    work.set_alias(alias, target)
    return target


def list_versions(db: str, work_dir: str | None = None) -> list[dict[str, Any]]:
    """Every table with its model, rows, the aliases pointing at it and its last held-out evaluation."""
    work = work_of(db, work_dir)
    aliases = work.aliases()
    out = []
    for t in _tables(db):
        out.append({
            "table": t["table"], "rows": t["rows"], "model": (t["meta"].get("model") or {}).get("name"),
            "aliases": sorted(a for a, target in aliases.items() if target == t["table"]),
            "eval": work.eval_record(t["table"]),
            "chunkset": t["meta"].get("chunkset"),
        })
    return out


def prune(db: str, tables: list[str] | None = None, *, dry_run: bool = False, work_dir: str | None = None) -> list[str]:
    """Drop tables no alias points at (or just ``tables``), with their run state and vectors nobody else uses."""
    import shutil

    from indexer.plugins import get_host
    from indexer.types import ModelInfo

    work = work_of(db, work_dir)
    aliases = work.aliases()
    if not aliases:
        raise ConfigError(f"no alias is set in {db}, so every table would go: point one at the table to keep "
                          f"(indexer alias set {ALIAS} TABLE)")
    existing = {t["table"]: t for t in _tables(db)}
    kept = set(aliases.values())
    if tables:
        unknown = sorted(set(tables) - set(existing))
        if unknown:
            raise ConfigError(f"no table {unknown[0]!r} in {db}")
        pointed = sorted(set(tables) & kept)
        if pointed:
            raise ConfigError(f"table {pointed[0]!r} is the target of an alias; move the alias first")
        doomed = sorted(tables)
    else:
        doomed = sorted(set(existing) - kept)
    if dry_run:
        return doomed
    sink = get_host().component("sink", SINK)(db=db, table="")
    for name in doomed:
        sink.delete_table(name)
        work.forget_table(name)

    def vector_set(meta: dict[str, Any]) -> tuple[str, str] | None:
        try:
            return ModelInfo(**meta["model"]).slug(), meta["chunkset"]
        except (KeyError, TypeError):
            return None

    in_use = {vector_set(t["meta"]) for n, t in existing.items() if n not in doomed}
    for name in doomed:
        vs = vector_set(existing[name]["meta"])
        if vs is not None and vs not in in_use:
            shutil.rmtree(work.root / "vectors" / vs[0] / vs[1], ignore_errors=True)
    return doomed
