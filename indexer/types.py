"""The data that flows through a pipeline: documents, chunks, bad records, shards, model fingerprints.

Chunks travel between stages as Python objects inside one process and as Arrow record batches
(:mod:`indexer.rows`) between processes, on disk and into sinks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One record of a source, after field mapping and validation."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    """A piece of a document, cut by token count.

    ``char_start``/``char_end`` index into the document's text; ``content_hash`` follows from the text and the
    chunking settings, ``id`` from the document id and the chunk's position, so both are deterministic.
    ``token_ids`` is an in-memory hand-over from chunker to embedder (tokenise once); it is never stored.
    """

    id: str
    doc_id: str
    chunk_index: int
    text: str
    token_count: int
    char_start: int
    char_end: int
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    token_ids: list[int] | None = field(default=None, repr=False, compare=False)


def chunk_id(doc_id: str, index: int) -> str:
    return f"{doc_id}#{index}"


def content_hash(text: str, settings_key: str) -> str:
    """Hash of a chunk's text under given chunking settings (16 hex chars, stable across runs and machines)."""
    h = hashlib.sha256()
    h.update(settings_key.encode())
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class BadRecord:
    """A record that was skipped, with where it came from and why."""

    shard: str
    record: str  # the record's id when it has one, else its locator ("line 17", "row 3")
    reason: str

    def __str__(self) -> str:
        return f"{self.shard}: {self.record}: {self.reason}"


@dataclass(frozen=True)
class Shard:
    """The unit of parallelism, progress and resume: one file, or one row range of a file or dataset.

    ``key`` is stable across runs and safe as a file name; ``fingerprint`` changes when the shard's input does
    (size and mtime, or a content hash), which is how a rerun notices an edited file. ``spec`` is whatever the
    source needs to read the shard again, JSON-serialisable so that it can travel to another process. ``size``
    is the bytes of input it reads (0 when unknown), which progress bars count.
    """

    key: str
    fingerprint: str
    spec: dict[str, Any] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """Everything that determines a vector set. Recorded with every table and published dataset."""

    name: str  # the id or path the user gave
    revision: str  # commit hash when known, else "local"
    fingerprint: str  # hash of the weights' and config files' contents (or of name+revision when remote)
    dimension: int
    pooling: str  # "mean", "cls", "lasttoken", "colbert" ...
    normalize: bool
    max_tokens: int
    precision: str = "fp32"
    kind: str = "dense"  # "dense" or "multivector"

    def slug(self) -> str:
        return f"{name_slug(self.name)}-{self.fingerprint[:8]}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        return cls(**json.loads(text))


def name_slug(name: str) -> str:
    """The last part of a model id or path, lower-cased, as a file-name-safe word of at most 40 characters."""
    base = name.rstrip("/").split("/")[-1].lower()
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base)[:40]
