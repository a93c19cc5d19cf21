"""The stored form of chunks, as Arrow: in the work directory, in sinks and in published datasets."""

from __future__ import annotations

import json

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


def vector_field(dimension: int) -> pa.Field:
    return pa.field("vector", pa.list_(pa.float32(), dimension))


def embedded_schema(dimension: int) -> pa.Schema:
    return CHUNK_SCHEMA.append(vector_field(dimension))


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
