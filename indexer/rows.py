"""The stored form of chunks, as Arrow: in the work directory, in sinks and in published datasets."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from indexer.types import Chunk

# The stored form of chunks: on disk in the work directory, in sinks, in published datasets.
CHUNK_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("token_count", pa.int32(), nullable=False),
        pa.field("char_start", pa.int64(), nullable=False),
        pa.field("char_end", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("metadata", pa.string()),  # JSON object; sources differ too much for a fixed struct
        pa.field("shard", pa.string(), nullable=False),
    ]
)


def stream_parquet(path: Any) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` to read batch by batch in bounded memory. pyarrow's default pre-buffering
    fetches the column chunks of every row group asked for before the first batch, so memory grew with the file
    (docs/benchmarks.md#figures-behind-the-code)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False)


def vector_field(dimension: int) -> pa.Field:
    return pa.field("vector", pa.list_(pa.float32(), dimension))


def multivector_field(dimension: int) -> pa.Field:
    """Late interaction: one ``dimension``-vector per token of the chunk (as many as it has)."""
    return pa.field("vector", pa.list_(pa.list_(pa.float32(), dimension)))


def embedded_schema(dimension: int, kind: str = "dense") -> pa.Schema:
    """``kind`` is the embedder's: "dense" (one vector per chunk) or "multivector" (one per token)."""
    return CHUNK_SCHEMA.append(multivector_field(dimension) if kind == "multivector" else vector_field(dimension))


def multivector_array(vectors: list, dimension: int) -> pa.Array:
    """The ``vector`` column of :func:`multivector_field` from one ``(tokens, dimension)`` array per chunk."""
    import numpy as np

    lengths = [len(v) for v in vectors]
    flat = np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1, dimension) for v in vectors]).reshape(-1) \
        if vectors else np.zeros(0, dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dimension)
    return pa.ListArray.from_arrays(pa.array(offsets), tokens, type=multivector_field(dimension).type)


def vector_rows(column: pa.Array | pa.ChunkedArray) -> Any:
    """The vectors of a ``vector`` column, one per row: a ``(rows, dimension)`` float32 array for a dense column
    (:func:`vector_field`), a list of ``(tokens, dimension)`` arrays for a multivector one."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)
    return multivector_rows(column)


def multivector_rows(column: pa.Array) -> list:
    """One ``(tokens, dimension)`` float32 array per row of a :func:`multivector_field` column."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = column.type.value_type.list_size
    offsets = column.offsets.to_numpy()
    flat = column.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(column))]


def chunks_to_batch(chunks: list[Chunk], shard: str) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "id": [c.id for c in chunks],
            "doc_id": [c.doc_id for c in chunks],
            "chunk_index": [c.chunk_index for c in chunks],
            "text": [c.text for c in chunks],
            "token_count": [c.token_count for c in chunks],
            "char_start": [c.char_start for c in chunks],
            "char_end": [c.char_end for c in chunks],
            "content_hash": [c.content_hash for c in chunks],
            "metadata": [json.dumps(c.metadata, sort_keys=True, default=str) if c.metadata else None for c in chunks],
            "shard": [shard] * len(chunks),
        },
        schema=CHUNK_SCHEMA,
    )


def batch_to_chunks(batch: pa.RecordBatch | pa.Table) -> list[Chunk]:
    cols = batch.to_pydict()
    return [
        Chunk(
            id=cols["id"][i],
            doc_id=cols["doc_id"][i],
            chunk_index=cols["chunk_index"][i],
            text=cols["text"][i],
            token_count=cols["token_count"][i],
            char_start=cols["char_start"][i],
            char_end=cols["char_end"][i],
            content_hash=cols["content_hash"][i],
            metadata=json.loads(cols["metadata"][i]) if cols["metadata"][i] else {},
        )
        for i in range(len(cols["id"]))
    ]
