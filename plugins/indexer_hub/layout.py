"""The published dataset's files: its columns, and parquet files of bounded size under ``data/``.

A published folder holds ``README.md`` (the dataset card) and ``data/train-00000-of-000NN.parquet`` … — the
names ``datasets`` maps to the ``train`` split by default, so ``load_dataset`` needs no arguments. The same rows in
the same order always give byte-identical files: a rerun overwrites them, and an interrupted upload can tell
finished files by their hash.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLIT = "train"
DATA_DIR = "data"
# The Hub recommends fewer than 10k entries per folder and 100k files per repository.
MAX_FILES_PER_FOLDER = 9_000
MAX_FILES = 99_999
# The dataset viewer reads a row group at a time and refuses groups over ~286 MiB in memory.
ROW_GROUP_BYTES = 64 << 20

# Dictionary encoding pays only for columns with few distinct values; on vectors it grows files by half.
DICTIONARY_COLUMNS = ["shard", "metadata"]

# Published column ← stored column (indexer.rows.embedded_schema); offsets and embedding are built specially.
RENAMED = {"embedding": "vector"}
STRING_COLUMNS = ("id", "doc_id", "text", "metadata", "content_hash", "shard")


def published_schema(dimension: int) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("chunk_index", pa.int32(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("token_count", pa.int32(), nullable=False),
            pa.field("offsets", pa.struct([pa.field("start", pa.int64(), nullable=False),
                                           pa.field("end", pa.int64(), nullable=False)]), nullable=False),
            pa.field("metadata", pa.string()),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("shard", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimension)),
        ]
    )


COLUMN_DOCS = {
    "id": "chunk id, `<doc_id>#<chunk_index>`",
    "doc_id": "id of the source document",
    "chunk_index": "position of the chunk in its document (0, 1, …)",
    "text": "the chunk's text, as embedded",
    "token_count": "tokens in the chunk, counted with the model's tokenizer (special tokens excluded)",
    "offsets": "`{start, end}`: character offsets of the chunk in the document's text (title included when "
               "the build joined one)",
    "metadata": "the document's kept fields, as a JSON object (null when none were kept)",
    "content_hash": "hash of the text and the chunking settings: equal hashes mean equal chunks",
    "shard": "the input shard (file or row range) the chunk came from",
    "embedding": "the vector, float32",
}


def to_published(batch: Any, dimension: int) -> Any:
    """An ``embedded_schema`` batch (as the work directory and LanceDB hold it) as published rows."""
    import pyarrow as pa

    schema = published_schema(dimension)
    offsets = pa.StructArray.from_arrays(
        [batch.column("char_start").cast(pa.int64()), batch.column("char_end").cast(pa.int64())],
        fields=list(schema.field("offsets").type),
    )
    columns = []
    for f in schema:
        if f.name == "offsets":
            columns.append(offsets)
        else:
            columns.append(batch.column(RENAMED.get(f.name, f.name)).cast(f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def to_embedded(batch: Any) -> Any:
    """Published rows back in ``indexer.rows.embedded_schema``, for a sink."""
    import pyarrow as pa

    from indexer.rows import embedded_schema

    dimension = batch.schema.field("embedding").type.list_size
    schema = embedded_schema(dimension)
    offsets = batch.column("offsets")
    by_name = {"char_start": offsets.field("start"), "char_end": offsets.field("end"), "vector": batch.column("embedding")}
    columns = [(by_name[f.name] if f.name in by_name else batch.column(f.name)).cast(f.type) for f in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def row_bytes(batch: Any) -> Any:
    """In-memory (Arrow) size of each row, so file and row-group cuts depend on the rows only, never on how
    they were batched."""
    import numpy as np
    import pyarrow.compute as pc

    dimension = batch.schema.field("embedding").type.list_size
    # ints: chunk_index, token_count (4 each), offsets (2 x 8); 4-byte offsets per string; the vector
    size = np.full(batch.num_rows, 4 + 4 + 16 + 4 * len(STRING_COLUMNS) + 4 * dimension, dtype=np.int64)
    for name in STRING_COLUMNS:
        lengths = pc.binary_length(batch.column(name)).fill_null(0)
        size += lengths.to_numpy(zero_copy_only=False).astype(np.int64)
    return size


@dataclass
class Stats:
    """What the written files hold; every number on the dataset card comes from here."""

    rows: int = 0
    documents: int = 0  # chunk_index == 0: exactly one per document, whatever the row order
    tokens: int = 0
    num_bytes: int = 0  # in memory (Arrow), as `datasets` reports a split's size; from row sizes, so deterministic
    files: list[str] = field(default_factory=list)  # paths relative to the folder, in order
    file_sizes: list[int] = field(default_factory=list)

    @property
    def download_size(self) -> int:
        return sum(self.file_sizes)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "documents": self.documents, "tokens": self.tokens, "files": len(self.files),
                "num_bytes": self.num_bytes, "download_size": self.download_size}


def data_file_name(index: int, count: int) -> str:
    name = f"{SPLIT}-{index:05d}-of-{count:05d}.parquet"
    if count > MAX_FILES_PER_FOLDER:
        return f"{DATA_DIR}/{index // MAX_FILES_PER_FOLDER:03d}/{name}"
    return f"{DATA_DIR}/{name}"


def data_files_pattern(count: int) -> str:
    """The ``configs`` glob for the split's files."""
    return f"{DATA_DIR}/*/{SPLIT}-*.parquet" if count > MAX_FILES_PER_FOLDER else f"{DATA_DIR}/{SPLIT}-*.parquet"


class DataFileWriter:
    """Writes published rows into parquet files under ``<folder>/data`` of at most ``max_file_bytes`` in memory
    (compressed files are smaller), in row groups of at most ``row_group_bytes``; ``close()`` names them
    ``train-i-of-n`` and removes data files of an earlier write.

    :param compression: zstd: text shrinks 2-3x, float32 vectors barely do.
    """

    def __init__(self, folder: str | Path, dimension: int, *, max_file_bytes: int,
                 row_group_bytes: int = ROW_GROUP_BYTES, compression: str = "zstd"):
        self.folder = Path(folder)
        self.dimension = dimension
        self.max_file_bytes = max_file_bytes
        self.row_group_bytes = max(1, min(row_group_bytes, max_file_bytes))
        self.compression = compression
        self.schema = published_schema(dimension)
        self.stats = Stats()
        self._partial = self.folder / ".partial"
        shutil.rmtree(self._partial, ignore_errors=True)
        self._partial.mkdir(parents=True)
        self._parts: list[Path] = []
        self._writer: Any = None
        self._file_bytes = 0
        self._group: list[Any] = []
        self._group_bytes = 0

    def write(self, batch: Any) -> None:
        import numpy as np

        if batch.num_rows == 0:
            return
        sizes = row_bytes(batch)
        start = 0
        while start < batch.num_rows:
            room = self.row_group_bytes - self._group_bytes
            fits = int(np.searchsorted(np.cumsum(sizes[start:]), room, side="right"))
            take = max(fits, 0 if self._group else 1)  # a row larger than a whole group goes alone
            if take:
                self._group.append(batch.slice(start, take))
                self._group_bytes += int(sizes[start : start + take].sum())
                start += take
            if start < batch.num_rows:
                self._flush_group()

    def _flush_group(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if not self._group:
            return
        table = pa.Table.from_batches(self._group, schema=self.schema)
        if self._writer is not None and self._file_bytes + self._group_bytes > self.max_file_bytes:
            self._close_file()
        if self._writer is None:
            path = self._partial / f"part-{len(self._parts):05d}.parquet"
            self._parts.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression=self.compression,
                                            use_dictionary=DICTIONARY_COLUMNS)
            self._file_bytes = 0
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._file_bytes += self._group_bytes
        st = self.stats
        st.rows += table.num_rows
        st.documents += pc.sum(pc.equal(table.column("chunk_index"), 0)).as_py() or 0
        st.tokens += pc.sum(table.column("token_count")).as_py() or 0
        st.num_bytes += self._group_bytes
        self._group, self._group_bytes = [], 0

    def _close_file(self) -> None:
        self._writer.close()
        self._writer = None

    def close(self) -> Stats:
        import pyarrow.parquet as pq

        self._flush_group()
        if self._writer is not None:
            self._close_file()
        if not self._parts:  # an empty table still publishes a loadable (empty) split
            path = self._partial / "part-00000.parquet"
            pq.write_table(self.schema.empty_table(), path, compression=self.compression, use_dictionary=DICTIONARY_COLUMNS)
            self._parts.append(path)
        count = len(self._parts)
        if count > MAX_FILES:
            raise ValueError(f"{count:,} data files is more than the Hub takes ({MAX_FILES:,}); raise the file size limit")
        names = [data_file_name(i, count) for i in range(count)]
        data = self.folder / DATA_DIR
        keep = {self.folder / n for n in names}
        if data.is_dir():
            for old in data.rglob("*"):
                if old.is_file() and old not in keep:
                    old.unlink()
        for part, name in zip(self._parts, names):
            target = self.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            self.stats.files.append(name)
            self.stats.file_sizes.append(target.stat().st_size)
        for empty in sorted((p for p in data.rglob("*") if p.is_dir()), reverse=True):
            if not any(empty.iterdir()):
                empty.rmdir()
        shutil.rmtree(self._partial, ignore_errors=True)
        return self.stats

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shutil.rmtree(self._partial, ignore_errors=True)
