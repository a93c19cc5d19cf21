"""Late-interaction vectors in LanceDB: one row per chunk, its per-token vectors in a multivector column
(``list<fixed_size_list<float32, dim>>``), searched with MaxSim.

It is the core's LanceDB sink with another ``vector`` column: the same upserts by shard, the same metadata
record, so a dense table and a late-interaction table can sit side by side in one database. LanceDB scores a
multivector query with cosine MaxSim and reports ``_distance = query tokens - MaxSim``; without an ANN index the
search is an exact scan.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from indexer.components import Hit
from indexer.options import option
from indexer_lancedb import RESULT_COLUMNS, VECTOR, LanceDBOptions, LanceDBSink, hit_from_columns

SINK_NAME = "lancedb-multivector"


@dataclass(frozen=True)
class MultivectorOptions(LanceDBOptions):
    """The ``lancedb`` sink's options with other defaults: an ANN index over token vectors is what the PLAID sink
    (``colbert``) is for, and the hybrid default was measured on single-vector tables, not on late interaction."""

    ann_min_rows: int = option(sys.maxsize, "rows from which close() builds an ANN index (default: never, an exact "
                               "MaxSim scan)", ge=1)
    index_type: str = option("IVF_PQ", "the ANN index, when ann_min_rows is reached")
    fts: bool = option(False, "keep a full-text index on text, which text and hybrid search need (default: searched "
                       "by MaxSim alone)")


class LanceDBMultivectorSink(LanceDBSink):
    """Per-token vectors of each chunk in a LanceDB table, searched exactly with MaxSim; its options are
    :class:`MultivectorOptions`."""

    description: ClassVar[str] = "LanceDB table of per-token vectors (late interaction, MaxSim search)"
    sink_name: ClassVar[str | None] = SINK_NAME
    vector_kind: ClassVar[str] = "multivector"
    other_kind_hint: ClassVar[str] = "use --late-interaction colbert, or the lancedb sink"
    name = SINK_NAME
    Options = MultivectorOptions

    def search(self, vectors: Any, k: int = 10, *, filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` chunks per query by MaxSim (``Hit.score``: the sum over query tokens of the best cosine with
        any of the chunk's tokens), best first. ``vectors`` holds one ``(query tokens, dim)`` array per query."""
        import numpy as np

        out: list[list[Hit]] = []
        tbl = self._table()
        for q in vectors:
            q = np.asarray(q, dtype=np.float32)
            if q.ndim != 2:
                raise ValueError(f"a late-interaction query is a (tokens, dim) array, got shape {q.shape}")
            if k < 1:
                out.append([])
                continue
            query = (tbl.search(q, vector_column_name=VECTOR).distance_type("cosine").limit(k)
                     .select([*RESULT_COLUMNS, "_distance"]))
            if filter:
                query = query.where(filter, prefilter=True)
            result = query.to_arrow().to_pydict()
            hits = [hit_from_columns(result, i, len(q) - result["_distance"][i]) for i in range(len(result["id"]))]
            hits.sort(key=lambda h: (-h.score, h.id))
            out.append(hits)
        return out


def maxsim(query: Any, docs: list[Any]) -> Any:
    """Brute-force MaxSim of one query (``(q, dim)``) against documents (each ``(tokens, dim)``), in numpy: the
    reference the PLAID index and the LanceDB table are checked against."""
    import numpy as np

    if not docs:
        return np.zeros(0, dtype=np.float32)
    lengths = np.array([len(d) for d in docs])
    sims = np.concatenate(docs) @ np.asarray(query, dtype=np.float32).T  # (all tokens, q)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.maximum.reduceat(sims, starts, axis=0).sum(axis=1)


def stored_vectors(db: str) -> tuple[list[str], list[Any]]:
    """Chunk ids and their per-token vectors as the last build left them in the work directory (``<db>/_indexer``):
    the very vectors both sinks were given."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from indexer.rows import multivector_rows

    ids: list[str] = []
    vectors: list[Any] = []
    for f in sorted(Path(db, "_indexer", "vectors").rglob("*.parquet")):
        table = pq.read_table(f, columns=["id", "vector"])
        ids += table.column("id").to_pylist()
        vectors += multivector_rows(table.column("vector"))
    return ids, vectors


def exact_ranking(query: Any, ids: list[str], vectors: list[Any]) -> list[tuple[str, float]]:
    """(chunk id, MaxSim) of every chunk for one query, best first (ties by id)."""
    scores = maxsim(query, vectors)
    return sorted(zip(ids, (float(s) for s in scores)), key=lambda x: (-x[1], x[0]))


def top_k(ranking: list[tuple[str, float]], k: int, tolerance: float = 1e-5) -> set[str]:
    """The ids of an exact ranking's top ``k``, with every chunk tied with the k-th (within ``tolerance``): any of
    them is a right answer for an approximate index."""
    kth = ranking[min(k, len(ranking)) - 1][1]
    return {i for i, score in ranking if score >= kth - tolerance}
