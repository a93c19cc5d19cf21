"""Where feedback lives: a LanceDB table ``_feedback`` inside the index's own database.

It sits beside the tables it judges, so it travels with the database folder (or object-store prefix) and survives
a deleted work directory, which holds only run state that can be rebuilt. Its vector column-less schema keeps it
out of ``indexer info`` and out of table auto-selection: the sink lists only tables that carry indexer metadata.

One row per (query, positive id): adding a pair that is already stored replaces its judgement (the latest thumbs
wins) instead of adding a row, so logging the same click twice, or importing the same qrels twice, changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from indexer.components import FeedbackPair, FeedbackStore
from indexer.config import DEFAULT_DB
from indexer.errors import ConfigError

TABLE = "_feedback"


def pair_key(query: str, positive_id: str) -> str:
    return hashlib.sha256(f"{query}\x00{positive_id}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def query_key(pair: FeedbackPair) -> str:
    """The query's id: the one it was imported with, else a hash of its text (same text, same query)."""
    return pair.query_id or "q" + hashlib.sha256(pair.query.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _schema():
    import pyarrow as pa

    return pa.schema([
        pa.field("key", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("query_id", pa.string()),
        pa.field("positive_id", pa.string(), nullable=False),
        pa.field("positive_text", pa.string()),
        pa.field("negative_ids", pa.list_(pa.string())),
        pa.field("relevance", pa.float64(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("timestamp", pa.float64(), nullable=False),
    ])


def check_pair(pair: FeedbackPair) -> None:
    if not isinstance(pair.query, str) or not pair.query.strip():
        raise ValueError("a feedback pair needs a non-empty query")
    if not isinstance(pair.positive_id, str) or not pair.positive_id:
        raise ValueError("a feedback pair needs a positive_id (the id of a chunk or document in the index)")
    if not isinstance(pair.relevance, (int, float)) or pair.relevance < 0:
        raise ValueError(f"relevance must be a number >= 0 (got {pair.relevance!r}); 0 means judged not relevant")


class LanceDBFeedbackStore(FeedbackStore):
    """Feedback pairs in the LanceDB table ``_feedback`` of ``db``; (query, positive id) is the key."""

    description = "LanceDB table _feedback in the index's database"
    name = "lancedb"

    def __init__(self, *, db: str, table: str = TABLE, **options: Any):
        super().__init__(db=db, **options)
        self.table = table
        self._tbl: Any = None

    def _open(self, create: bool) -> Any:
        if self._tbl is None:
            from datetime import timedelta

            import lancedb

            # an application logs while a trainer reads: every read must see every commit, from any process
            conn = lancedb.connect(self.db, read_consistency_interval=timedelta(0))
            if create:
                self._tbl = conn.create_table(self.table, schema=_schema(), exist_ok=True)
            else:
                try:
                    self._tbl = conn.open_table(self.table)
                except (FileNotFoundError, ValueError):
                    return None
        return self._tbl

    def add(self, pairs: Iterable[FeedbackPair]) -> int:
        import pyarrow as pa

        now = time.time()
        rows: dict[str, dict[str, Any]] = {}
        for p in pairs:
            check_pair(p)
            key = pair_key(p.query, p.positive_id)
            rows[key] = {  # within one call the last judgement of a pair wins, as across calls
                "key": key, "query": p.query, "query_id": p.query_id, "positive_id": p.positive_id,
                "positive_text": p.positive_text, "negative_ids": list(p.negative_ids),
                "relevance": float(p.relevance), "source": p.source, "timestamp": p.timestamp or now,
            }
        if not rows:
            return 0
        batch = pa.Table.from_pylist(list(rows.values()), schema=_schema())
        result = (self._open(create=True).merge_insert("key").when_matched_update_all()
                  .when_not_matched_insert_all().execute(batch))
        return result.num_inserted_rows

    def pairs(self) -> Iterator[FeedbackPair]:
        tbl = self._open(create=False)
        if tbl is None:
            return
        rows = tbl.to_arrow().sort_by([("timestamp", "ascending"), ("key", "ascending")]).to_pylist()
        for r in rows:
            yield FeedbackPair(query=r["query"], positive_id=r["positive_id"], positive_text=r["positive_text"],
                               negative_ids=list(r["negative_ids"] or []), relevance=r["relevance"],
                               source=r["source"] or "", timestamp=r["timestamp"], query_id=r["query_id"])

    def compact(self) -> None:
        """Fold the small commits that logging one click at a time leaves into a few files."""
        tbl = self._open(create=False)
        if tbl is not None:
            tbl.optimize()


# --------------------------------------------------------------------------------------------------------------
# The application-facing log
# --------------------------------------------------------------------------------------------------------------


class FeedbackLog:
    """Feedback of one index, for an application to log clicks and thumbs as they happen::

        log = FeedbackLog("index.lancedb")
        log.add("how do vaccines work", "Vaccine#0")                 # a click on a result
        log.add("how do vaccines work", "Virus", relevance=0)        # a thumbs-down
        log.add("cheap flights", "Airline#2", relevance=2, negative_ids=["Bus#0"], source="editor")

    Each :meth:`add` is one small LanceDB commit (milliseconds); :meth:`add_many` commits a batch at once.
    The store is a plugin (``store``, default ``lancedb``).
    """

    def __init__(self, db: str = DEFAULT_DB, *, store: str = "lancedb", **options: Any):
        from indexer.plugins import get_host

        self.db = db
        self.store: FeedbackStore = get_host().component("feedback_store", store)(db=db, **options)

    def add(self, query: str, positive_id: str, *, relevance: float = 1.0, negative_ids: Iterable[str] = (),
            positive_text: str | None = None, source: str = "api", query_id: str | None = None,
            timestamp: float = 0.0) -> bool:
        """Record that ``positive_id`` (a chunk or document id) answers ``query`` (``relevance`` 0: it does not).
        Returns whether the pair is new."""
        return self.add_many([FeedbackPair(query, positive_id, positive_text, list(negative_ids), relevance, source,
                                           timestamp, query_id)]) == 1

    def add_many(self, pairs: Iterable[FeedbackPair]) -> int:
        """Store pairs; return how many were new."""
        return self.store.add(pairs)

    def pairs(self) -> list[FeedbackPair]:
        return list(self.store.pairs())

    def compact(self) -> None:
        """Fold the many small commits of one-click-at-a-time logging into a few files (stores that can)."""
        self.store.compact()

    def stats(self) -> dict[str, Any]:
        return stats(self.store.pairs())

    def import_jsonl(self, path: str | Path, source: str | None = None) -> ImportReport:
        return import_jsonl(self.store, path, source)

    def import_qrels(self, qrels: str | Path, queries: str | Path, source: str | None = None) -> ImportReport:
        return import_qrels(self.store, qrels, queries, source)

    def export_jsonl(self, path: str | Path) -> int:
        return export_jsonl(self.store.pairs(), path)

    def export_qrels(self, qrels: str | Path, queries: str | Path) -> int:
        return export_qrels(self.store.pairs(), qrels, queries)


# --------------------------------------------------------------------------------------------------------------
# Import, export, statistics
# --------------------------------------------------------------------------------------------------------------


class ImportReport:
    def __init__(self) -> None:
        self.read = 0
        self.added = 0
        self.updated = 0
        self.skipped: list[str] = []  # "where: why", like the run summary's bad records

    def render(self, max_skipped: int = 20) -> str:
        lines = [f"read {self.read:,} judgements: {self.added:,} new pairs, {self.updated:,} already stored (updated)"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped):,}:")
            lines.extend(f"  - {s}" for s in self.skipped[:max_skipped])
            if len(self.skipped) > max_skipped:
                lines.append(f"  … and {len(self.skipped) - max_skipped:,} more")
        return "\n".join(lines)


def _store_all(store: FeedbackStore, pairs: list[FeedbackPair], report: ImportReport) -> ImportReport:
    distinct = len({pair_key(p.query, p.positive_id) for p in pairs})
    report.added = store.add(pairs)
    report.updated = distinct - report.added
    return report


def import_jsonl(store: FeedbackStore, path: str | Path, source: str | None = None) -> ImportReport:
    """Pairs from a jsonl file, one object a line: ``query``, ``positive_id`` (or ``doc_id`` / ``id``), and
    optionally ``positive_text``, ``negative_ids``, ``relevance``, ``source``, ``query_id``, ``timestamp`` —
    the format :func:`export_jsonl` writes. Bad lines are reported and skipped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"feedback file {p} does not exist")
    report, pairs = ImportReport(), []
    with p.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.read += 1
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"a line must be a JSON object, not {type(rec).__name__}")
                positive = rec.get("positive_id", rec.get("doc_id", rec.get("id")))
                negatives = rec.get("negative_ids") or []
                if not isinstance(negatives, list):
                    raise ValueError("negative_ids must be a list of ids")
                pair = FeedbackPair(
                    query=rec.get("query"), positive_id=str(positive) if positive is not None else None,
                    positive_text=rec.get("positive_text"), negative_ids=[str(x) for x in negatives],
                    relevance=float(rec.get("relevance", 1.0)), source=source or rec.get("source") or f"import:{p.name}",
                    timestamp=float(rec.get("timestamp") or 0.0), query_id=rec.get("query_id"),
                )
                check_pair(pair)
            except (ValueError, TypeError) as exc:
                report.skipped.append(f"{p.name} line {n}: {exc}")
                continue
            pairs.append(pair)
    return _store_all(store, pairs, report)


def import_qrels(store: FeedbackStore, qrels: str | Path, queries: str | Path, source: str | None = None) -> ImportReport:
    """BEIR qrels (``query-id corpus-id score``) with their queries file. Graded scores are kept as relevance;
    score-0 rows are kept too, as pairs judged not relevant (relevance 0), which fine-tuning uses as explicit
    negatives of that query and never as positives."""
    from indexer.metrics import read_qrels
    from indexer.retrieval import read_queries

    judged = read_qrels(qrels)
    texts = read_queries(queries)
    report, pairs = ImportReport(), []
    tag = source or f"beir:{Path(qrels).name}"
    for qid, docs in judged.items():
        report.read += len(docs)
        if qid not in texts:
            report.skipped.append(f"query {qid}: not in {Path(queries).name} ({len(docs)} judgement(s))")
            continue
        pairs.extend(FeedbackPair(texts[qid], doc, relevance=float(score), source=tag, query_id=qid)
                     for doc, score in docs.items())
    return _store_all(store, pairs, report)


def export_jsonl(pairs: Iterable[FeedbackPair], path: str | Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
            n += 1
    return n


def export_qrels(pairs: Iterable[FeedbackPair], qrels: str | Path, queries: str | Path) -> int:
    """BEIR layout: a qrels TSV and a queries jsonl. Relevance is written as an integer grade."""
    n, texts = 0, {}
    with open(qrels, "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for p in pairs:
            qid = query_key(p)
            texts[qid] = p.query
            f.write(f"{qid}\t{p.positive_id}\t{round(p.relevance)}\n")
            n += 1
    with open(queries, "w", encoding="utf-8") as f:
        for qid, text in texts.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    return n


def stats(pairs: Iterable[FeedbackPair]) -> dict[str, Any]:
    total = 0
    queries: set[str] = set()
    judged_queries: set[str] = set()
    positives: set[str] = set()
    grades: Counter = Counter()
    sources: Counter = Counter()
    with_negatives = explicit_negatives = 0
    first = last = None
    for p in pairs:
        total += 1
        q = query_key(p)
        queries.add(q)
        grades[_grade(p.relevance)] += 1
        sources[p.source] += 1
        if p.relevance > 0:
            judged_queries.add(q)
            positives.add(p.positive_id)
        if p.negative_ids:
            with_negatives += 1
            explicit_negatives += len(p.negative_ids)
        first = p.timestamp if first is None else min(first, p.timestamp)
        last = p.timestamp if last is None else max(last, p.timestamp)
    return {
        "pairs": total,
        "queries": len(queries),
        "queries_with_a_positive": len(judged_queries),
        "positive_pairs": total - grades.get("0", 0),
        "not_relevant_pairs": grades.get("0", 0),
        "distinct_positive_ids": len(positives),
        "relevance": dict(sorted(grades.items())),
        "pairs_with_negative_ids": with_negatives,
        "negative_ids": explicit_negatives,
        "sources": dict(sources.most_common()),
        "first": first,
        "last": last,
    }


def _grade(relevance: float) -> str:
    return str(int(relevance)) if float(relevance).is_integer() else f"{relevance:g}"


def render_stats(s: dict[str, Any]) -> str:
    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    lines = [
        f"pairs       {s['pairs']:,} ({s['positive_pairs']:,} relevant, {s['not_relevant_pairs']:,} judged not relevant)",
        f"queries     {s['queries']:,} ({s['queries_with_a_positive']:,} with a relevant passage)",
        f"positives   {s['distinct_positive_ids']:,} distinct ids",
        "relevance   " + ", ".join(f"{g}: {n:,}" for g, n in s["relevance"].items()),
        f"negatives   {s['negative_ids']:,} explicit negative ids on {s['pairs_with_negative_ids']:,} pairs",
        "sources     " + ", ".join(f"{k}: {v:,}" for k, v in s["sources"].items()),
        f"logged      {when(s['first'])} … {when(s['last'])}",
    ]
    return "\n".join(lines)
