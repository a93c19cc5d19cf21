"""Late-interaction vectors in LanceDB: one row per chunk, its per-token vectors in a multivector column
(``list<fixed_size_list<float32, dim>>``), searched with MaxSim.

It is the core's LanceDB sink with another ``vector`` column: the same upserts by shard, the same metadata
record, so a dense table and a late-interaction table can sit side by side in one database. LanceDB scores a
multivector query with cosine MaxSim and reports ``_distance = query tokens - MaxSim``; without an ANN index the
search is an exact scan.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, ClassVar

from indexer.components import Hit
from indexer.errors import ConfigError
from indexer.types import ModelInfo
from indexer_lancedb import META_KEY, RESULT_COLUMNS, VECTOR, LanceDBSink, _dumps, _hit, _table_meta

SINK_NAME = "lancedb-multivector"


class LanceDBMultivectorSink(LanceDBSink):
    """Per-token vectors of each chunk in a LanceDB table, searched exactly with MaxSim.

    Options are the ``lancedb`` sink's; ``ann_min_rows`` defaults to never (an exact scan), since an ANN index
    over token vectors is what the PLAID sink (``colbert``) is for.
    """

    description: ClassVar[str] = "LanceDB table of per-token vectors (late interaction, MaxSim search)"

    def __init__(self, *, db: str, table: str, ann_min_rows: int = sys.maxsize, index_type: str = "IVF_PQ",
                 **options: Any):
        super().__init__(db=db, table=table, ann_min_rows=ann_min_rows, index_type=index_type, **options)

    def open(self, model: ModelInfo, meta: dict[str, Any]) -> None:
        from indexer.rows import embedded_schema

        if model.kind != "multivector":
            raise ConfigError(f"sink {SINK_NAME} stores per-token vectors; model {model.name} makes {model.kind} "
                              "vectors (use --late-interaction colbert, or the lancedb sink)")
        meta = {**meta, "model": asdict(model), "sink": SINK_NAME}
        schema = embedded_schema(model.dimension, "multivector")
        tbl = self._open_table(required=False)
        if tbl is None:
            vector = schema.field(VECTOR).with_metadata({META_KEY: _dumps(meta)})
            self._tbl = self._connection().create_table(self.table,
                                                        schema=schema.set(schema.get_field_index(VECTOR), vector))
        else:
            stored = _table_meta(tbl) or {}
            if (stored.get("model") or {}).get("fingerprint") != model.fingerprint or stored.get("sink") != SINK_NAME:
                raise ConfigError(f"table {self.table} in {self.db} holds other vectors than model {model.name}'s "
                                  "per-token ones; pass another --table or leave --table out")
            if stored != json.loads(_dumps(meta)):
                tbl.update_field_metadata({"path": VECTOR, "metadata": {META_KEY: _dumps(meta)}})
        self._schema = schema
        self._writing = True

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
            hits = [_hit(result, i, len(q) - result["_distance"][i]) for i in range(len(result["id"]))]
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
