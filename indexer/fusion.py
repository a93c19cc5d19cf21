"""Hybrid search: one ranking from a dense (vector) ranking and a text (BM25) ranking of the same table.

Two ways to fuse, both weighting the text ranking by ``text_weight`` against the dense ranking's 1:

* **rrf** — reciprocal-rank fusion: ``score = 1 / (rrf_k + dense rank) + text_weight / (rrf_k + text rank)``. Only
  ranks count, so scores on different scales (cosines, BM25) need no calibration.
* **convex** — a convex combination of min-max normalised scores: ``(dense' + text_weight * text') / (1 +
  text_weight)``, where each list's scores are mapped to [0, 1] over the candidates it returned. It keeps how far
  apart candidates are, which ranks throw away.

A candidate missing from one list gets nothing from that list. With documents (``by_doc``), chunks are either
aggregated to documents first (each list ranks documents by their best chunk, then the document rankings are
fused: ``fuse="doc"``) or fused as chunks and then aggregated (``fuse="chunk"``); docs/benchmarks.md has the
measurements behind the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from indexer.components import Hit

Key = Callable[[Hit], str]


def by_chunk(hit: Hit) -> str:
    return hit.id


def by_doc(hit: Hit) -> str:
    return hit.doc_id


def best_per_doc(hits: list[Hit]) -> list[Hit]:
    """Documents ranked by their best chunk's score (max-P), each represented by that chunk."""
    best: dict[str, Hit] = {}
    for h in hits:
        if h.doc_id not in best or h.score > best[h.doc_id].score:
            best[h.doc_id] = h
    return sorted(best.values(), key=lambda h: (-h.score, h.id))


def rrf(dense: list[Hit], text: list[Hit], *, text_weight: float, rrf_k: int, key: Key) -> list[Hit]:
    scores: dict[str, float] = {}
    for ranking, weight in ((dense, 1.0), (text, text_weight)):
        for rank, hit in enumerate(ranking, 1):
            scores[key(hit)] = scores.get(key(hit), 0.0) + weight / (rrf_k + rank)
    return _ranked(dense, text, scores, key)


def convex(dense: list[Hit], text: list[Hit], *, text_weight: float, key: Key) -> list[Hit]:
    scores: dict[str, float] = {}
    for ranking, weight in ((dense, 1.0), (text, text_weight)):
        if not ranking:
            continue
        top = max(h.score for h in ranking)
        low = min(h.score for h in ranking)
        span = top - low
        for hit in ranking:
            normalised = (hit.score - low) / span if span > 0 else 1.0
            scores[key(hit)] = scores.get(key(hit), 0.0) + weight * normalised / (1.0 + text_weight)
    return _ranked(dense, text, scores, key)


FUSIONS = {"rrf": rrf, "convex": convex}


def _ranked(dense: list[Hit], text: list[Hit], scores: dict[str, float], key: Key) -> list[Hit]:
    """One hit per key with its fused score, best first (ties by id, so rankings are deterministic)."""
    hits: dict[str, Hit] = {}
    for hit in (*text, *dense):  # the dense list's copy wins: same row, and its chunk is the best by vector
        hits[key(hit)] = hit
    fused = [replace(hit, score=scores[k]) for k, hit in hits.items()]
    return sorted(fused, key=lambda h: (-h.score, h.id))
