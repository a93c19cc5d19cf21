"""Deterministic fake components for the core's own tests: no model, no database, no files of their own.

They are registered through a plugin object exactly as a real plugin would register its components.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from indexer.components import Chunker, Embedder, FeedbackStore, Hit, Sink, Source
from indexer.hookspecs import hookimpl
from indexer.types import Chunk, ModelInfo, Shard, chunk_id, content_hash

DIM = 8


class FakeSource(Source):
    """Reads a JSON file ``{shard: [records...]}``; the shard fingerprint is the hash of its records."""

    @classmethod
    def can_read(cls, uri: str) -> bool:
        return uri.endswith(".fake.json")

    def check(self):
        from indexer.errors import ConfigError

        if not Path(self.uri).is_file():
            raise ConfigError(f"{self.uri} does not exist")

    def _data(self):
        return json.loads(Path(self.uri).read_text())

    def shards(self):
        return [Shard(k, hashlib.sha256(json.dumps(v).encode()).hexdigest(), {}) for k, v in sorted(self._data().items())]

    def records(self, shard):
        for i, rec in enumerate(self._data()[shard.key], 1):
            yield f"row {i}", (ValueError(rec["error"]) if isinstance(rec, dict) and "error" in rec else rec)


class WordChunker(Chunker):
    """Chunks by whitespace words (a "token" is a word)."""

    def chunk(self, doc):
        words = doc.text.split()
        out, start, i = [], 0, 0
        while start < len(words):
            piece = words[start : start + self.max_tokens]
            text = " ".join(piece)
            out.append(Chunk(chunk_id(doc.id, i), doc.id, i, text, len(piece), 0, len(text),
                             content_hash(text, self.settings_key()), dict(doc.metadata)))
            if start + self.max_tokens >= len(words):
                break
            start += self.max_tokens - self.overlap
            i += 1
        return out


class HashEmbedder(Embedder):
    """Vectors from a hash of the text; counts what it embedded (class-wide, across instances)."""

    embedded: list[str] = []

    @property
    def info(self):
        return ModelInfo(self.model, "local", hashlib.sha256(self.model.encode()).hexdigest(), DIM, "mean", True, 64,
                         self.options.get("precision", "fp32"))

    def check(self):
        from indexer.errors import ConfigError

        if self.model.startswith("missing"):
            raise ConfigError(f"model {self.model} not found")

    def tokenizer(self):
        return None

    def content_token_limit(self):
        return 62

    def embed_batch(self, chunks):
        HashEmbedder.embedded.extend(c.text for c in chunks)
        out = []
        for c in chunks:
            seed = int(hashlib.sha256((self.model + c.text).encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


class MemorySink(Sink):
    """Keeps rows per (db, table, shard) in a class-level dict, like a database that outlives a run."""

    searchable = True
    store: dict = defaultdict(dict)
    metas: dict = {}

    def open(self, model, meta):
        from indexer.errors import ConfigError

        old = MemorySink.metas.get((self.db, self.table))
        if old and old["model"]["fingerprint"] != model.fingerprint:
            raise ConfigError(f"table {self.table} holds another model's vectors")
        MemorySink.metas[(self.db, self.table)] = meta

    def write_shard(self, shard, batches):
        rows = [r for b in batches for r in b.to_pylist()]
        MemorySink.store[(self.db, self.table)][shard] = rows
        return len(rows)

    def rows(self):
        return [r for rows in MemorySink.store[(self.db, self.table)].values() for r in rows]

    def tables(self):
        return [{"table": t, "rows": sum(len(v) for v in MemorySink.store[(db, t)].values()), "meta": m}
                for (db, t), m in MemorySink.metas.items() if db == self.db]

    def search(self, vectors, k=10, *, filter=None):
        rows = self.rows()
        mat = np.array([r["vector"] for r in rows], dtype=np.float32)
        out = []
        for q in np.atleast_2d(vectors):
            scores = mat @ q
            order = np.argsort(-scores)[:k]
            out.append([Hit(rows[i]["id"], rows[i]["doc_id"], float(scores[i]), rows[i]["text"]) for i in order])
        return out


class WriteOnlySink(MemorySink):
    """Stores rows like MemorySink but, like a published dataset, cannot be searched."""

    searchable = False


class ListFeedbackStore(FeedbackStore):
    """Keeps pairs in a list, dropping exact duplicates."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._pairs = []

    def add(self, pairs):
        before = len(self._pairs)
        for p in pairs:
            if p not in self._pairs:
                self._pairs.append(p)
        return len(self._pairs) - before

    def pairs(self):
        return iter(self._pairs)


class FakePlugin:
    """Registers the fakes under names of their own."""

    @staticmethod
    @hookimpl
    def register_sources(register):
        register("fake", FakeSource)

    @staticmethod
    @hookimpl
    def register_chunkers(register):
        register("words", WordChunker)

    @staticmethod
    @hookimpl
    def register_embedders(register):
        register("hash", HashEmbedder)

    @staticmethod
    @hookimpl
    def register_sinks(register):
        register("memory", MemorySink)
        register("write-only", WriteOnlySink)

    @staticmethod
    @hookimpl
    def register_feedback_stores(register):
        register("list", ListFeedbackStore)
