"""Feedback pairs read against an index: ids resolved to documents and passages, the held-out split, qrels, and
retrieval metrics over a set of chunk vectors.

Relevance is judged per document: a pair whose positive is a chunk id counts for that chunk's document, the unit
``indexer search --by-doc`` ranks and ``indexer eval`` scores.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from indexer.components import FeedbackPair, Sink
from indexer_feedback.store import query_key

CHUNK_COLUMNS = ["id", "doc_id", "chunk_index", "text", "vector"]
# ids per filtered scan: keeps the SQL filter short and the scans few
_IDS_PER_SCAN = 400


def is_heldout(doc_id: str, seed: int, fraction: float) -> bool:
    """Whether a document is held out: a hash of (seed, document) against ``fraction``. It depends on nothing else,
    so a document stays on its side of the split however much feedback arrives later, and a script can recompute
    the split without the store."""
    h = hashlib.sha256(f"{seed}\x00{doc_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


@dataclass
class Judgement:
    """One feedback pair resolved against the index."""

    query: str
    qid: str
    positive_id: str
    doc_id: str
    relevance: float
    negative_ids: list[str] = field(default_factory=list)
    positive_text: str | None = None


def _sql_list(ids: Sequence[str]) -> str:
    return ", ".join("'" + i.replace("'", "''") + "'" for i in ids)


def rows_of(sink: Sink, filter: str | None = None, columns: Sequence[str] = CHUNK_COLUMNS) -> list[dict[str, Any]]:
    """The rows of the table ``sink`` holds (those matching ``filter``), read back through :meth:`Sink.scan`."""
    return [row for batch in sink.scan(columns, filter=filter) for row in batch.to_pylist()]


def read_chunks(sink: Sink, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """id → its chunk rows (ordered by position), for ids that are chunk ids or document ids of the table ``sink``
    holds."""
    wanted = sorted(set(ids))
    by_chunk: dict[str, dict[str, Any]] = {}
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for start in range(0, len(wanted), _IDS_PER_SCAN):
        part = _sql_list(wanted[start : start + _IDS_PER_SCAN])
        for r in rows_of(sink, f"id IN ({part}) OR doc_id IN ({part})"):
            if r["id"] not in by_chunk:
                by_chunk[r["id"]] = r
                by_doc[r["doc_id"]].append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for i in wanted:
        if i in by_doc:
            out[i] = sorted(by_doc[i], key=lambda r: r["chunk_index"])
        elif i in by_chunk:
            out[i] = [by_chunk[i]]
    return out


def resolve(pairs: Iterable[FeedbackPair], sink: Sink) -> tuple[list[Judgement], dict[str, list[dict[str, Any]]], list[str]]:
    """Judgements for the pairs whose positive is in the table ``sink`` holds (or that carry their own text), the
    chunk rows of every id they name (positives and negatives), and a reason for each pair left out."""
    pairs = list(pairs)
    ids = {p.positive_id for p in pairs} | {n for p in pairs for n in p.negative_ids}
    rows = read_chunks(sink, ids)
    out, skipped = [], []
    for p in pairs:
        found = rows.get(p.positive_id)
        if found is None and not p.positive_text:
            skipped.append(f"{p.positive_id!r} (query {p.query[:60]!r}): not in the table and no positive_text")
            continue
        doc_id = found[0]["doc_id"] if found else p.positive_id
        out.append(Judgement(p.query, query_key(p), p.positive_id, doc_id, float(p.relevance), list(p.negative_ids),
                             p.positive_text))
    return out, rows, skipped


def qrels_of(judgements: Iterable[Judgement]) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """(qid → query text, qid → {doc id: relevance}) — the highest grade wins when a document is judged twice."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = defaultdict(dict)
    for j in judgements:
        queries[j.qid] = j.query
        qrels[j.qid][j.doc_id] = max(j.relevance, qrels[j.qid].get(j.doc_id, 0.0))
    return queries, dict(qrels)


def recorded_heldout(model: str) -> Any:
    """The held-out judgements ``indexer finetune`` recorded beside the model it saved (an
    :class:`indexer.versions.Heldout`), or None when ``model`` is no such model. Answers the core's
    ``heldout_judgements`` hook, so ``indexer reembed --model FINE_TUNED`` scores on the split training never saw."""
    from indexer.versions import Heldout
    from pathlib import Path

    from indexer_feedback.finetune import RECORD, read_record

    record = read_record(model)
    if record is None:
        return None
    heldout = record.get("heldout", [])
    queries, qrels = qrels_of(Judgement(j["query"], j["query_id"], j["doc_id"], j["doc_id"], j["relevance"])
                              for j in heldout)
    return Heldout(queries, qrels, f"the held-out pairs recorded in {Path(model) / RECORD}") if qrels else None


def rank_by_doc(query_vectors: Any, chunk_vectors: Any, doc_ids: Sequence[str], k: int = 100) -> list[list[tuple[str, float]]]:
    """Per query, the top ``k`` documents by their best chunk's cosine similarity (exact, in memory)."""
    import numpy as np

    q = _normalise(np.asarray(query_vectors, dtype=np.float32))
    c = _normalise(np.asarray(chunk_vectors, dtype=np.float32))
    docs = sorted(set(doc_ids))
    position = {d: i for i, d in enumerate(docs)}
    owner = np.array([position[d] for d in doc_ids])
    out = []
    for start in range(0, len(q), 256):
        scores = q[start : start + 256] @ c.T
        best = np.full((scores.shape[0], len(docs)), -np.inf, dtype=np.float32)
        np.maximum.at(best.T, owner, scores.T)
        top = np.argsort(-best, axis=1, kind="stable")[:, :k]
        out.extend([(docs[j], float(best[r, j])) for j in row] for r, row in enumerate(top))
    return out


def _normalise(x: Any) -> Any:
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
