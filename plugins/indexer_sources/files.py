"""Sources over local files: JSON lines, parquet, CSV, text/markdown folders and BEIR folders.

The input is a file, a folder (its files of the format, recursive, sorted) or a glob. One file is one shard,
except that a big file is cut: JSON lines and CSV over the shard size into line-aligned byte ranges (planned by
seeking, not reading), parquet over ``rows_per_shard`` rows into runs of row groups. A compressed file is one
stream and stays one shard; the pipeline's checkpoints bound what a crash inside it loses.
"""

from __future__ import annotations

import os
import zlib
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from indexer.components import FieldMapping, Source, SourceOptions
from indexer.config import DEFAULT_SHARD_BYTES, parse_shard_size
from indexer.errors import BadInputError, ConfigError
from indexer.options import option
from indexer.types import Shard

from . import formats
from .layout import BEIR_CORPUS, EXTENSIONS, InputFile, detect, fingerprint, is_glob, list_files, part_key, shard_key

DEFAULT_ROWS_PER_SHARD = 100_000


def guarded(records: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Turn a file that breaks off mid-read (truncated gzip, corrupt parquet page) into one bad record, so that
    the records before it still count and the run goes on."""
    import pyarrow as pa

    where = None
    try:
        for where, record in records:
            yield where, record
    except (OSError, EOFError, zlib.error, pa.ArrowException) as exc:
        at = f"after {where}" if where else "start of file"
        yield at, BadInputError(f"the file could not be read further: {exc}")


def parquet_shards(f: InputFile, rows_per_shard: int, fp: str, **spec: Any) -> list[Shard]:
    """One shard for a parquet file of at most ``rows_per_shard`` rows, else one per run of row groups."""
    spec = {"path": str(f.path), "rel": f.rel, **spec}
    size = f.path.stat().st_size
    whole = [Shard(shard_key(f.rel), fp, {**spec, "row_groups": None, "start": 0}, size=size)]
    try:
        ranges = formats.parquet_row_ranges(f.path, rows_per_shard)
    except (OSError, ValueError):  # an unreadable footer: reading the one shard reports it
        return whole
    if len(ranges) == 1:
        return whole
    rows = ranges[-1][2]
    return [
        Shard(shard_key(f.rel, (start, end)), fp, {**spec, "row_groups": groups, "start": start},
              size=size * (end - start) // max(rows, 1))
        for groups, start, end in ranges
    ]


def read_parquet_shard(spec: dict[str, Any], mapping: FieldMapping) -> Iterator[tuple[str, Any]]:
    columns = formats.wanted_columns(mapping, formats.parquet_columns(spec["path"]))
    yield from formats.read_parquet(spec["path"], spec["row_groups"], spec["start"], columns)


class FileSource(Source):
    """Shared by the file formats: finding files, shards, configuration checks. The ``shard_size`` option
    (``--shard-size``) is read by the formats that cut files; by default :data:`DEFAULT_SHARD_BYTES`."""

    #: the name it is registered under, which :func:`layout.detect` returns for inputs it reads
    name: ClassVar[str]
    #: key into :data:`layout.EXTENSIONS`
    format: ClassVar[str]

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        super().__init__(uri, mapping=mapping, **options)
        size = self.options.shard_size
        self.shard_size = parse_shard_size(size) if size is not None else None

    @classmethod
    def can_read(cls, uri: str) -> bool:
        return detect(uri) == cls.name

    def identity(self) -> str:
        return f"{self.name}:{os.path.abspath(os.path.expanduser(self.uri))}"

    def files(self) -> list[InputFile]:
        return list_files(self.uri, EXTENSIONS[self.format])

    def check(self) -> None:
        path = Path(self.uri).expanduser()
        if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"cannot read folder {self.uri}: permission denied")
        files = self.files()
        if not files:
            raise ConfigError(self._nothing_found())
        for f in files:
            if not os.access(f.path, os.R_OK):
                raise ConfigError(f"cannot read {f.path}: permission denied")
        columns = self.columns(files[0])
        if columns is not None:
            formats.check_columns(self.mapping, columns, files[0].rel)

    def _nothing_found(self) -> str:
        exts = ", ".join(EXTENSIONS[self.format])
        if is_glob(self.uri):
            return f"no files match {self.uri}"
        if not Path(self.uri).expanduser().exists():
            return f"{self.uri} does not exist; give a file, a folder of {exts} files or a glob pattern"
        return (
            f"no {exts} files in {self.uri}; give a folder that holds them, "
            "or pick the source for its files with --source"
        )

    def columns(self, first: InputFile) -> list[str] | None:
        """The first file's columns, which the field mapping is checked against (``None``: no schema to check)."""
        return formats.columns_of(first.path, self.format)

    def shards(self) -> list[Shard]:
        return [Shard(shard_key(f.rel), fingerprint(f.path), {"path": str(f.path), "rel": f.rel},
                      size=f.path.stat().st_size) for f in self.files()]

    def records(self, shard: Shard) -> Iterator[tuple[str, Any]]:
        return guarded(self.read_file(shard.spec))

    @abstractmethod
    def read_file(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """The records of the file (or row range) a shard's spec names."""


class LineFileSource(FileSource):
    """A format of one record per line (or per line-aligned run of lines): an uncompressed file over the shard
    size is cut into byte ranges that start and end between records. Range ``k`` of a file is keyed
    ``<file>@part<k>`` (the first keeps the file's own key), so keys stay the same from one run to the next
    however the ranges' bytes move, and a file that grows past the shard size keeps its first shard's rows."""

    def shards(self) -> list[Shard]:
        out = []
        for f in self.files():
            size, fp = f.path.stat().st_size, fingerprint(f.path)
            spec = {"path": str(f.path), "rel": f.rel}
            limit = self._shard_bytes(f.path)
            if size <= limit or formats.is_compressed(f.path):
                out.append(Shard(shard_key(f.rel), fp, spec, size=size))
                continue
            out.extend(Shard(part_key(f.rel, k), f"{fp}@{start}-{end}", {**spec, "start": start, "end": end},
                             size=end - start)
                       for k, (start, end) in enumerate(self.cut(f.path, limit)))
        return out

    def _shard_bytes(self, path: Path) -> int:
        if self.shard_size is None:
            return DEFAULT_SHARD_BYTES
        n, unit = self.shard_size
        return n if unit == "bytes" else max(1, round(n * formats.bytes_per_line(path)))

    @abstractmethod
    def cut(self, path: Path, size: int) -> list[tuple[int, int]]:
        """Byte ranges of about ``size`` bytes, each starting and ending between records."""


class JsonlSource(LineFileSource):
    """JSON lines (.jsonl, .ndjson, optionally gzipped): one object per line."""

    description = "JSON-lines files (.jsonl, .ndjson, .gz): a file, a folder of them or a glob; big files are cut"
    name = "jsonl"
    format = "jsonl"

    def cut(self, path: Path, size: int) -> list[tuple[int, int]]:
        return formats.line_ranges(path, size)

    def read_file(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        return formats.read_jsonl(spec["path"], self.mapping.max_doc_chars, spec.get("start", 0), spec.get("end"))


@dataclass(frozen=True)
class CsvOptions(SourceOptions):
    delimiter: str | None = option(None, "field separator; by default a tab for .tsv files and a comma otherwise")


class CsvSource(LineFileSource):
    """CSV or TSV files with a header row."""

    description = "CSV/TSV files with a header row: a file, a folder of them or a glob; big files are cut"
    name = "csv"
    format = "csv"
    Options = CsvOptions

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        super().__init__(uri, mapping=mapping, **options)
        self.delimiter = self.options.delimiter

    def columns(self, first: InputFile) -> list[str] | None:
        return formats.columns_of(first.path, self.format, self.delimiter)

    def cut(self, path: Path, size: int) -> list[tuple[int, int]]:
        return formats.csv_ranges(path, size)

    def read_file(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        return formats.read_csv(spec["path"], formats.csv_delimiter(spec["path"], self.delimiter),
                                spec.get("start", 0), spec.get("end"))


@dataclass(frozen=True)
class RowsOptions(SourceOptions):
    rows_per_shard: int = option(DEFAULT_ROWS_PER_SHARD, "a file with more rows is cut into shards of about this many "
                                 "rows (parquet: whole row groups; --shard-size, when given, instead)", ge=1)


class ParquetSource(FileSource):
    """Parquet files, read in batches of rows and only the columns the field mapping uses."""

    description = "parquet files: a file, a folder of them or a glob; big files are cut by row groups"
    name = "parquet"
    format = "parquet"
    Options = RowsOptions

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        super().__init__(uri, mapping=mapping, **options)
        self.rows_per_shard = self.options.rows_per_shard

    def shards(self) -> list[Shard]:
        return [s for f in self.files() for s in parquet_shards(f, self._rows_per_shard(f), fingerprint(f.path))]

    def _rows_per_shard(self, f: InputFile) -> int:
        """--shard-size in rows, or in bytes turned into rows at the file's own bytes per row."""
        if self.shard_size is None:
            return self.rows_per_shard
        n, unit = self.shard_size
        if unit == "rows":
            return n
        try:
            rows = formats.parquet_rows(f.path)
        except (OSError, ValueError):
            return self.rows_per_shard
        return max(1, n * rows // max(f.path.stat().st_size, 1))

    def read_file(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        return read_parquet_shard(spec, self.mapping)


class TextSource(FileSource):
    """A folder of .txt / .md files, one document per file, its id the file's path relative to the folder.
    A file is one document, so it is never cut: a document's chunks stay in one shard.

    Records carry ``path`` and, for markdown with a ``# heading``, ``title``; keep them with ``--metadata-field``.
    """

    description = "a folder of .txt/.md files, one document per file (id: the relative path)"
    name = "text"
    format = "text"

    def read_file(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        return formats.read_text(spec["path"], spec["rel"], self.mapping.max_doc_chars)


class BeirSource(JsonlSource):
    """A BEIR folder (corpus.jsonl of ``_id``, ``title``, ``text``); the title goes before the text unless the
    field mapping says otherwise (``title_field=""`` turns it off)."""

    description = "a BEIR folder: corpus.jsonl with _id, title, text (title joined before the text)"
    name = "beir"

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        m = mapping or FieldMapping()
        m = replace(
            m,
            id_field="_id" if m.id_field is None else m.id_field,
            title_field="title" if m.title_field is None else m.title_field,
        )
        super().__init__(uri, mapping=m, **options)

    def files(self) -> list[InputFile]:
        folder = Path(self.uri).expanduser()
        if folder.is_dir():
            corpus = folder / BEIR_CORPUS
            return [InputFile(corpus.absolute(), BEIR_CORPUS)] if corpus.is_file() else []
        return super().files()

    def _nothing_found(self) -> str:
        if Path(self.uri).expanduser().is_dir():
            return f"{self.uri} has no {BEIR_CORPUS}; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/"
        return super()._nothing_found()
