"""The default sink: a LanceDB table per model, searchable by vector (cosine) and by full text (BM25), with
metadata fields as typed columns that search filters evaluate natively (:mod:`indexer_lancedb.columns`).

What the table holds is recorded with it, as JSON under the key ``indexer`` in the Arrow field metadata of its
``vector`` column. Schema-level metadata would be the obvious place, but lancedb 0.40 offers no way to change it
after the table is created; field metadata is written in the same commit that creates the table, can be updated
in one more versioned commit (``update_field_metadata``), survives merge_insert, compaction and index builds, and
travels with the table when its folder is copied. A sidecar table would be a second commit that can fail on its
own, and one more table that every listing has to skip.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from indexer.components import Hit, Sink
from indexer.errors import ConfigError
from indexer.hookspecs import hookimpl
from indexer.log import get_logger
from indexer.options import Options, option
from indexer.types import ModelInfo

log = get_logger("lancedb")
META_KEY = "indexer"
VECTOR = "vector"
TEXT = "text"
# index_type -> its config class in lancedb.index (imported when an index is built)
INDEX_CONFIGS = {"IVF_HNSW_SQ": "HnswSq", "IVF_HNSW_PQ": "HnswPq", "IVF_PQ": "IvfPq", "IVF_SQ": "IvfSq",
                 "IVF_FLAT": "IvfFlat", "IVF_RQ": "IvfRq"}
INDEX_TYPES = tuple(INDEX_CONFIGS)
# Everything but the vector: results stay small however many queries a batch holds.
RESULT_COLUMNS = ["id", "doc_id", "chunk_index", "text", "metadata"]
# One HNSW graph per IVF partition; a graph over a million vectors still trains in memory comfortably.
ROWS_PER_HNSW_PARTITION = 1_000_000
# Queries per lancedb call: a flat search shares one table scan across them.
QUERY_BATCH = 1024
# rows per record batch of Sink.scan
SCAN_BATCH = 4096
# The full-text index's tokenizer options: sink option -> lancedb.index.FTS argument.
FTS_OPTIONS = {"fts_tokenizer": "base_tokenizer", "fts_language": "language", "fts_stem": "stem",
               "fts_stop_words": "remove_stop_words", "fts_ascii_folding": "ascii_folding",
               "fts_lower_case": "lower_case", "fts_with_position": "with_position"}
SCALAR_INDEX_TYPES = ("BTREE", "BITMAP", "LABEL_LIST")


@dataclass(frozen=True)
class LanceDBOptions(Options):
    ann_min_rows: int = option(100_000, "rows from which close() builds an ANN index; below it flat search is exact "
                               "and fast", ge=1)
    index_type: str = option("IVF_HNSW_SQ", f"the ANN index ({', '.join(INDEX_TYPES)}; IVF_HNSW_SQ: no codebook to "
                             "train, good recall at any size)")
    rows_per_partition: int = option(0, "rows per IVF partition of the ANN index (0: one HNSW graph per million rows, "
                                     "lancedb's sizing for other types); past 20 partitions smaller ones trade recall "
                                     "for speed", ge=0)
    fts: bool = option(True, "keep a full-text (BM25) index on text for text and hybrid search (false drops it)")
    fts_tokenizer: str = option("simple", "the full-text index's base tokenizer (simple, whitespace, raw, ngram, icu)")
    fts_language: str = option("English", "language for stemming and stop words (English, French, German, ...)")
    fts_stem: bool = option(True, "reduce words to their stem (running -> run)")
    fts_stop_words: bool = option(True, "leave out the language's stop words")
    fts_ascii_folding: bool = option(True, "fold accented letters to ASCII (cafe for café)")
    fts_lower_case: bool = option(True, "case-insensitive matching")
    fts_with_position: bool = option(False, "store token positions (phrase queries; a bigger index)")
    scalar_index: tuple[str, ...] = option((), "columns to keep a scalar index on, for fast filters: topic,doc_id; "
                                           "name:BITMAP for few distinct values, name:LABEL_LIST for a list column "
                                           "(default BTREE)")
    metric: str = option("cosine", "only cosine: scores are cosine similarities")
    refine_factor: int = option(2, "an ANN search re-scores k * refine_factor candidates with the stored vectors, so "
                                "scores are exact cosine similarities", ge=1)


class LanceDBSink(Sink):
    """Writes embedded chunks to a LanceDB table and searches them.

    :param db: a folder (created when missing) or any lancedb URI.
    :param table: the table name.

    Its options are :class:`LanceDBOptions`; the full-text index is rebuilt when its tokenizer options change.
    """

    description: ClassVar[str] = "LanceDB table (vector, full-text and hybrid search; metadata as columns)"
    searchable: ClassVar[bool] = True
    search_modes: ClassVar[tuple[str, ...]] = ("dense", "text", "hybrid")
    sink_name: ClassVar[str | None] = None  # set by a subclass whose tables only it can search
    vector_kind: ClassVar[str] = "dense"  # what the vector column holds: the embedder's ModelInfo.kind
    other_kind_hint: ClassVar[str] = "with --late-interaction colbert, write to --sink colbert or lancedb-multivector"

    name = "lancedb"
    Options = LanceDBOptions

    def __init__(self, *, db: str, table: str, **options: Any):
        super().__init__(db=db, table=table, **options)
        o = self.options
        self.fts_config = {argument: getattr(o, name) for name, argument in FTS_OPTIONS.items()}
        self.ann_min_rows = o.ann_min_rows
        self.index_type = o.index_type.upper()
        self.fts = o.fts
        self.scalar_indexes = _scalar_index_option(o.scalar_index)
        self.metric = o.metric.lower()
        self.refine_factor = o.refine_factor
        self.rows_per_partition = o.rows_per_partition
        self._conn: Any = None
        self._tbl: Any = None
        self._async_tbl: tuple[int, Any] | None = None  # (version, lancedb AsyncTable) for concurrent text queries
        self._writing = False  # open() was called: close() then maintains indexes

    def __getstate__(self) -> dict[str, Any]:
        # Handles hold native resources; a copy in another process reconnects on first use.
        state = dict(self.__dict__)
        state["_conn"] = state["_tbl"] = state["_async_tbl"] = None
        return state

    # ----------------------------------------------------------------------------------------------------------
    # Configuration

    def check(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ConfigError(f"unknown index_type {self.index_type!r}; known: {', '.join(INDEX_TYPES)}")
        if self.metric != "cosine":
            raise ConfigError(f"metric {self.metric!r} is not supported by the lancedb sink; use 'cosine'")
        if not self.table or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in self.table):
            raise ConfigError(
                f"table name {self.table!r} may contain only letters, digits, underscores, hyphens and periods"
            )
        path = _local_path(self.db)
        if path is None:
            return  # object stores and remote databases report their own errors on connect
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"--db {self.db} is a file; the lancedb sink needs a folder")
        existing = path
        while not os.path.exists(existing):
            parent = os.path.dirname(existing)
            if parent == existing:
                break
            existing = parent
        if not os.path.isdir(existing):
            raise ConfigError(f"--db {self.db} cannot be created: {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--db {self.db} is not writable ({existing} does not allow writing)")

    # ----------------------------------------------------------------------------------------------------------
    # Writing

    def open(self, model: ModelInfo, meta: dict[str, Any]) -> None:
        from indexer.rows import embedded_schema  # pyarrow: not at plugin import, `indexer --help` stays fast

        if model.kind != self.vector_kind:
            raise ConfigError(f"sink {self.sink_name or 'lancedb'} stores {self.vector_kind} vectors; model "
                              f"{model.name} makes {model.kind} vectors ({self.other_kind_hint})")
        meta = dict(meta)
        meta.setdefault("model", asdict(model))
        if self.sink_name:  # a table only the sink that wrote it can search (retrieval.open_index reads this)
            meta["sink"] = self.sink_name
        schema = embedded_schema(model.dimension, model.kind)
        conn = self._connection()
        tbl = self._open_table(required=False)
        if tbl is None:
            vector = schema.field(VECTOR).with_metadata({META_KEY: _dumps(meta)})
            tbl = conn.create_table(self.table, schema=schema.set(schema.get_field_index(VECTOR), vector))
            self._tbl = tbl
        else:
            self._check_compatible(tbl, model, schema)
            if _table_meta(tbl) != json.loads(_dumps(meta)):
                tbl.update_field_metadata({"path": VECTOR, "metadata": {META_KEY: _dumps(meta)}})
        self._schema = schema
        self._writing = True

    def _check_compatible(self, tbl: Any, model: ModelInfo, schema: Any) -> None:
        stored = _table_meta(tbl)
        if stored is None:
            raise ConfigError(
                f"table {self.table} in {self.db} was not written by indexer (its vector column carries no "
                f"'{META_KEY}' metadata); pass another --table"
            )
        old = stored.get("model") or {}
        if old.get("fingerprint") != model.fingerprint:
            raise ConfigError(
                f"table {self.table} holds vectors of model {old.get('name', '?')} (fingerprint "
                f"{old.get('fingerprint', '?')}); a new model writes a new table: pass another --table or leave "
                "--table out"
            )
        dim = _vector_dimension(tbl.schema)
        if dim != model.dimension:
            raise ConfigError(
                f"table {self.table} holds {dim}-dimensional vectors but model {model.name} makes "
                f"{model.dimension}-dimensional ones; pass another --table or leave --table out"
            )
        have = {f.name: f.type for f in tbl.schema}
        missing = [f.name for f in schema if have.get(f.name) != f.type]
        if missing:
            raise ConfigError(
                f"table {self.table} does not have the columns indexer writes ({', '.join(missing)} differ); "
                "pass another --table"
            )

    def write_shard(self, shard: str, batches: Iterable[Any]) -> int:
        if not self._writing:
            raise RuntimeError("LanceDBSink.open() must be called before write_shard()")
        import pyarrow as pa

        from indexer_lancedb import columns  # pyarrow: not at plugin import

        base = self._schema
        written = 0
        failure: BaseException | None = None
        late: set[str] = set()  # metadata fields first seen after the write began: their columns come after it
        escaped = shard.replace("'", "''")
        tbl = self._table()

        incoming = (b for b in (_conform(b, base) for b in _record_batches(batches)) if b.num_rows)
        first = next(incoming, None)
        if first is not None:
            # The first batch's metadata fields get their columns before the write, which fixes the schema.
            self._add_columns(tbl, columns.new_fields(columns.parse(first.column("metadata")), tbl.schema))
        schema = pa.schema([f.remove_metadata() for f in tbl.schema])
        fields = columns.metadata_fields(schema)

        def rows() -> Iterator[Any]:
            nonlocal failure
            try:
                if first is not None:
                    yield typed(first)
                for batch in incoming:
                    yield typed(batch)
            except BaseException as exc:
                failure = exc
                raise

        def typed(batch: Any) -> Any:
            nonlocal written
            check_shard_column(batch, shard)
            objects = columns.parse(batch.column("metadata"))
            late.update(f.name for f in columns.new_fields(objects, schema))
            written += batch.num_rows
            return pa.RecordBatch.from_arrays([*batch.columns, *columns.columns_for(objects, fields)], schema=schema)

        reader = pa.RecordBatchReader.from_batches(schema, rows())
        try:
            if tbl.count_rows(f"shard = '{escaped}'") == 0:
                # Nothing of this shard yet (a first build): an append streams in bounded memory, while a merge
                # holds the whole shard for its join. Still one commit: a failing iterator adds nothing.
                tbl.add(reader)
            else:
                # One merge commits the whole shard or nothing: a failing iterator leaves the old rows in place.
                (tbl.merge_insert("id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(f"shard = '{escaped}'")
                    .execute(reader))
        except Exception as exc:
            # lancedb wraps an error raised while reading the batches in a RuntimeError; the caller should see
            # the embedder's (or our) own exception.
            if failure is not None and failure is not exc:
                raise failure from None
            raise
        if late:
            self._fill_late_columns(tbl, escaped)
        return written

    def _add_columns(self, tbl: Any, fields: list[Any]) -> None:
        if fields:
            import pyarrow as pa

            tbl.add_columns(pa.schema(fields))

    def _fill_late_columns(self, tbl: Any, escaped_shard: str | None) -> None:
        """Columns for metadata fields that appeared only after a shard's first batch: added now, and filled for
        that shard's rows (every row with ``None``) from their JSON metadata — one more commit, only when a field
        shows up late, or for a table written before metadata had columns."""
        import pyarrow as pa

        from indexer_lancedb import columns  # pyarrow: not at plugin import

        query = tbl.search().where(f"shard = '{escaped_shard}'") if escaped_shard is not None else tbl.search()
        rows = query.select(["id", "metadata"]).limit(None).to_arrow()
        objects = columns.parse(rows.column("metadata"))
        added = columns.new_fields(objects, tbl.schema)
        self._add_columns(tbl, added)
        values = columns.columns_for(objects, added)
        update = pa.Table.from_arrays([rows.column("id"), *values], names=["id", *[f.name for f in added]])
        tbl.merge_insert("id").when_matched_update_all().execute(update)

    def close(self) -> None:
        writing, self._writing = self._writing, False
        try:
            if writing and self._tbl is not None:
                self._maintain_indexes(self._tbl)
        finally:
            self._tbl = None
            self._conn = None

    def __exit__(self, exc_type, *exc):
        # After a failure the table holds whatever shards committed; training an index over it would only delay
        # the error.
        if exc_type is not None:
            self._writing = False
        return super().__exit__(exc_type, *exc)

    def _maintain_indexes(self, tbl: Any) -> None:
        from indexer_lancedb import columns  # pyarrow: not at plugin import

        if not columns.metadata_fields(tbl.schema) and tbl.count_rows("metadata IS NOT NULL"):
            self._fill_late_columns(tbl, None)  # written before metadata fields had columns of their own
        rows = tbl.count_rows()
        indexes = {i.name: i for i in tbl.list_indices()}
        vector_index = next((i for i in indexes.values() if VECTOR in i.columns and i.index_type != "FTS"), None)
        text_index = next((i for i in indexes.values() if TEXT in i.columns and i.index_type == "FTS"), None)
        stale = 0  # rows written since an index was built; optimize() folds them into every index
        built = False

        if rows >= self.ann_min_rows:
            stats = tbl.index_stats(vector_index.name) if vector_index else None
            if stats is None or stats.num_indexed_rows < rows / 2:
                # A delta over half the table would search worse than a fresh index with partitions sized for it.
                self._build_vector_index(tbl, rows)
                built = True
            else:
                stale = max(stale, stats.num_unindexed_rows)
        if self.fts:
            stats = tbl.index_stats(text_index.name) if text_index else None
            # The index records how it tokenizes; other options than those asked for now mean a rebuild.
            details = (getattr(text_index, "index_details", None) or {}) if text_index else {}
            if stats is None or {k: details.get(k) for k in self.fts_config} != self.fts_config:
                start = time.perf_counter()
                from lancedb.index import FTS

                tbl.create_index(TEXT, config=FTS(**self.fts_config), replace=True)
                log.info(f"table {self.table!r}: built full-text index on {TEXT!r} over {rows:,} rows in "
                         f"{time.perf_counter() - start:.1f} s")
                built = True
            else:
                stale = max(stale, stats.num_unindexed_rows)
        elif text_index is not None:
            tbl.drop_index(text_index.name)  # fts=false: a stale index would answer text searches wrongly
            log.info(f"table {self.table!r}: dropped its full-text index (fts=false)")
        for column, kind in self.scalar_indexes.items():
            if column not in tbl.schema.names:
                log.warning(f"table {self.table!r}: no column {column!r} for scalar_index; columns that can have one: "
                            f"{', '.join(filterable_columns(tbl.schema))}")
                continue
            index = next((i for i in indexes.values() if i.columns == [column]), None)
            if index is None or index.index_type.upper() != kind:
                start = time.perf_counter()
                tbl.create_scalar_index(column, index_type=kind, replace=True)
                log.info(f"table {self.table!r}: built {kind} index on {column!r} in "
                         f"{time.perf_counter() - start:.1f} s")
                built = True
            else:
                stale = max(stale, tbl.index_stats(index.name).num_unindexed_rows)
        if stale:
            start = time.perf_counter()
            tbl.optimize()
            log.info(f"table {self.table!r}: added {stale:,} new rows to its indexes in "
                     f"{time.perf_counter() - start:.1f} s")
        elif not built and tbl.stats()["fragment_stats"]["num_small_fragments"] >= 64:
            # Every shard write leaves a small fragment; scans slow down as they pile up.
            tbl.optimize()

    def _build_vector_index(self, tbl: Any, rows: int) -> None:
        from lancedb import index as li

        per_partition = self.rows_per_partition or (ROWS_PER_HNSW_PARTITION if "HNSW" in self.index_type else 0)
        # Without a size, plain IVF indexes leave partitions (and sub-vectors) to lancedb, which sizes them itself.
        partitions = max(1, math.ceil(rows / per_partition)) if per_partition else None
        config = getattr(li, INDEX_CONFIGS[self.index_type])(distance_type=self.metric, num_partitions=partitions)
        start = time.perf_counter()
        tbl.create_index(VECTOR, config=config, replace=True)
        parts = f"{partitions:,} partition{'s' if partitions > 1 else ''}" if partitions else "partitions by lancedb"
        log.info(f"table {self.table!r}: built {self.index_type} index on {VECTOR!r} over {rows:,} rows ({parts}) in "
                 f"{time.perf_counter() - start:.1f} s")

    # ----------------------------------------------------------------------------------------------------------
    # Reading

    def search(self, vectors: Any, k: int = 10, *, filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` hits per query vector by cosine similarity (``Hit.score``), best first. Exact while the table
        has no ANN index; with one, candidates are re-scored with the stored vectors."""
        import numpy as np

        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2:
            raise ValueError(f"query vectors must be a 1-D or 2-D array, got shape {queries.shape}")
        if len(queries) == 0 or k < 1:
            return [[] for _ in range(len(queries))]
        tbl = self._table()
        dim = _vector_dimension(tbl.schema)
        if queries.shape[1] != dim:
            raise ConfigError(
                f"query vectors have {queries.shape[1]} dimensions; table {self.table} holds {dim}-dimensional ones "
                "(were the queries embedded with the table's model?)"
            )
        out: list[list[Hit]] = []
        for start in range(0, len(queries), QUERY_BATCH):
            part = queries[start : start + QUERY_BATCH]
            query = (
                tbl.search(part if len(part) > 1 else part[0], vector_column_name=VECTOR)
                .distance_type(self.metric)
                .limit(k)
                .refine_factor(self.refine_factor)
                .ef(max(100, 2 * k * self.refine_factor))
                .select([*RESULT_COLUMNS, "_distance"])
            )
            if filter:
                query = query.where(filter, prefilter=True)
            result = query.to_arrow().to_pydict()
            which = result.get("query_index") or [0] * len(result["id"])
            grouped: list[list[Hit]] = [[] for _ in range(len(part))]
            for i, q in enumerate(which):
                grouped[q].append(hit_from_columns(result, i, 1.0 - result["_distance"][i]))
            for hits in grouped:
                hits.sort(key=lambda h: (-h.score, h.id))
            out.extend(grouped)
        return out

    def search_text(self, query: str, k: int = 10, *, filter: str | None = None) -> list[Hit]:
        """Top ``k`` hits for a keyword query by BM25 (``Hit.score``), best first; needs the full-text index."""
        return self.search_texts([query], k, filter=filter)[0]

    def available_modes(self) -> tuple[str, ...]:
        return self.search_modes if self._has_text_index() else ("dense",)

    def _has_text_index(self) -> bool:
        return any(TEXT in i.columns and i.index_type == "FTS" for i in self._table().list_indices())

    def search_texts(self, queries: Sequence[str], k: int = 10, *, filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` hits per keyword query by BM25, best first. The queries of a batch run concurrently on
        lancedb's async API (one full-text search each): the server's hybrid throughput at 32 requests in flight
        went from 2.2x to 3.1x that at 1 with it (docs/benchmarks.md#search-service-indexer-serve)."""
        tbl = self._table()
        if not self._has_text_index():
            raise ConfigError(f"table {self.table} has no full-text index; build it again with the lancedb sink's "
                              "default --option lancedb.fts=true (a rerun only builds the index)")
        asked = [i for i, query in enumerate(queries) if k >= 1 and query.strip()]
        out: list[list[Hit]] = [[] for _ in queries]
        if not asked:
            return out
        results = _run_coroutine(self._text_searches([queries[i] for i in asked], tbl.version, k, filter))
        for i, result in zip(asked, results):
            hits = [hit_from_columns(result, j, result["_score"][j]) for j in range(len(result["id"]))]
            hits.sort(key=lambda h: (-h.score, h.id))
            out[i] = hits
        return out

    async def _text_searches(self, queries: list[str], version: int, k: int, filter: str | None) -> list[dict]:
        import asyncio

        import lancedb
        from lancedb.query import MatchQuery

        # The version the synchronous table reads, so dense and text halves of a hybrid search see the same rows.
        if self._async_tbl is None or self._async_tbl[0] != version:
            conn = await lancedb.connect_async(self.db)
            table = await conn.open_table(self.table)
            await table.checkout(version)
            self._async_tbl = (version, table)
        table = self._async_tbl[1]

        async def one(query: str) -> dict:
            # A MatchQuery takes the words as they are: no query syntax for a user's quotes or colons to break.
            builder = table.query().nearest_to_text(MatchQuery(query, TEXT)).limit(k)
            builder = builder.select([*RESULT_COLUMNS, "_score"])
            if filter:
                builder = builder.where(filter)
            return (await builder.to_arrow()).to_pydict()

        return list(await asyncio.gather(*(one(query) for query in queries)))

    def filterable_columns(self) -> list[str]:
        return filterable_columns(self._table().schema)

    def filterable_types(self) -> dict[str, str]:
        from indexer_lancedb import columns  # pyarrow: not at plugin import

        schema = self._table().schema
        return {name: columns.value_kind(schema.field(name).type) for name in filterable_columns(schema)}

    def check_filter(self, filter: str) -> None:
        """Fails with the columns a filter may name when ``filter`` is not a valid predicate on this table."""
        tbl = self._table()
        try:
            tbl.search().where(filter).select(["id"]).limit(1).explain_plan()
        except (ValueError, RuntimeError) as exc:
            reason = str(exc).split(". Valid fields are")[0].removeprefix("Invalid input, ")
            raise ConfigError(f"--where {filter!r}: {reason}; filterable columns of table {self.table}: "
                              f"{', '.join(filterable_columns(tbl.schema))}") from None

    def count(self) -> int:
        tbl = self._open_table(required=False)
        return 0 if tbl is None else tbl.count_rows()

    def scan(self, columns: Sequence[str] | None = None, *, filter: str | None = None,
             batch_rows: int = SCAN_BATCH) -> Iterator[Any]:
        """The table's rows in storage order, as Arrow record batches of at most ``batch_rows`` rows: ``columns``
        (default all), those matching the SQL predicate ``filter``; at the version the table had when the scan
        started."""
        query = self._table().search()
        if filter:
            query = query.where(filter)
        if columns is not None:
            query = query.select(list(columns))
        yield from query.limit(None).to_batches(batch_rows)

    def tables(self) -> list[dict[str, Any]]:
        conn = self._connection()
        out = []
        for name in _table_names(conn):
            try:
                tbl = conn.open_table(name)
            except Exception:  # a half-written or foreign table should not hide the others
                continue
            meta = _table_meta(tbl)
            if meta is not None:
                out.append({"table": name, "rows": tbl.count_rows(), "meta": meta})
        return out

    @classmethod
    def read_meta(cls, db: str, table: str) -> dict[str, Any]:
        """The metadata recorded with ``table`` (``meta["model"]`` is ``asdict(ModelInfo)``), for embedding
        queries with the table's model and settings."""
        sink = cls(db=db, table=table)
        meta = _table_meta(sink._table())
        if meta is None:
            raise ConfigError(f"table {table} in {db} was not written by indexer (it carries no '{META_KEY}' metadata)")
        return meta

    def delete_table(self, table: str | None = None) -> bool:
        """Drop ``table`` (default: this sink's table); False when there was none."""
        name = table or self.table
        conn = self._connection()
        if name not in _table_names(conn):
            return False
        conn.drop_table(name)
        if name == self.table:
            self._tbl = None
        return True

    # ----------------------------------------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            import lancedb

            self._conn = lancedb.connect(self.db)
        return self._conn

    def _open_table(self, *, required: bool) -> Any:
        if self._tbl is None:
            conn = self._connection()
            if self.table in _table_names(conn):
                self._tbl = conn.open_table(self.table)
            elif required:
                names = [t["table"] for t in self.tables()]
                known = ", ".join(names) if names else "none"
                raise ConfigError(f"no table {self.table} in {self.db}; indexer tables there: {known}")
        return self._tbl

    def _table(self) -> Any:
        return self._open_table(required=True)


# --------------------------------------------------------------------------------------------------------------


def filterable_columns(schema: Any) -> list[str]:
    """Columns a ``--where`` predicate can name: metadata columns first, then indexer's own (not the vector)."""
    from indexer_lancedb import columns  # pyarrow: not at plugin import

    own = [f.name for f in schema if f.name in columns.RESERVED and f.name != VECTOR]
    return [f.name for f in columns.metadata_fields(schema)] + own


def _scalar_index_option(items: Sequence[str]) -> dict[str, str]:
    """``("topic", "year:BITMAP")`` -> ``{"topic": "BTREE", "year": "BITMAP"}``."""
    out: dict[str, str] = {}
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        name, _, kind = item.partition(":")
        kind = (kind or "BTREE").strip().upper()
        if kind not in SCALAR_INDEX_TYPES:
            raise ConfigError(f"lancedb option scalar_index: {item!r} names index type {kind!r}; known: "
                              f"{', '.join(SCALAR_INDEX_TYPES)} (e.g. scalar_index=topic:BITMAP)")
        out[name.strip()] = kind
    return out


def _dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, default=str)


def _table_meta(tbl: Any) -> dict[str, Any] | None:
    try:
        field = tbl.schema.field(VECTOR)
    except KeyError:
        return None
    raw = (field.metadata or {}).get(META_KEY.encode())
    return json.loads(raw) if raw else None


def _vector_dimension(schema: Any) -> int:
    from indexer.state import vector_field_kind

    return vector_field_kind(schema.field(VECTOR))[0]


def _table_names(conn: Any) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        page = conn.list_tables(page_token=token)
        names.extend(page.tables)
        if not page.page_token or page.page_token == token or not page.tables:
            return names
        token = page.page_token


def _local_path(db: str) -> str | None:
    if db.startswith("file://"):
        return db[len("file://") :]
    if "://" in db:
        return None
    return os.path.abspath(os.path.expanduser(db))


def _record_batches(batches: Iterable[Any]) -> Iterator[Any]:
    import pyarrow as pa

    for item in batches:
        if isinstance(item, pa.Table):
            yield from item.to_batches()
        else:
            yield item


def _conform(batch: Any, schema: Any) -> Any:
    """The batch with exactly the table's columns and types (writers may differ in column order, nullability
    flags, string width)."""
    import pyarrow as pa

    if batch.schema.equals(schema, check_metadata=False):
        return batch
    try:
        columns = [batch.column(f.name).cast(f.type) for f in schema]
    except KeyError as exc:
        raise ValueError(f"batch has no column {exc}; expected the columns of indexer.rows.embedded_schema") from None
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def check_shard_column(batch: Any, shard: str) -> None:
    """Raise ValueError unless every row of ``batch`` is labelled with ``shard``: a row labelled with another
    shard would escape that shard's next rewrite and linger as a duplicate (every sink that keeps shards checks)."""
    import pyarrow.compute as pc

    if not pc.all(pc.equal(batch.column("shard"), shard)).as_py():
        others = sorted(set(batch.column("shard").to_pylist()) - {shard})[:3]
        raise ValueError(f"rows written to shard {shard!r} are labelled with shard {others}")


def _run_coroutine(coroutine: Any) -> Any:
    """Runs ``coroutine`` to its end from synchronous code, in a thread of its own when this one already runs an
    event loop (a sink called from async code)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def hit_from_columns(result: dict[str, list], i: int, score: float) -> Hit:
    """Hit ``i`` of a search result read as columns (``RESULT_COLUMNS``), with ``score``."""
    metadata = result["metadata"][i]
    return Hit(
        id=result["id"][i],
        doc_id=result["doc_id"][i],
        score=float(score),
        text=result["text"][i],
        chunk_index=result["chunk_index"][i],
        metadata=json.loads(metadata) if metadata else {},
    )


@hookimpl(trylast=True)
def register_sinks(register):
    register("lancedb", LanceDBSink)
