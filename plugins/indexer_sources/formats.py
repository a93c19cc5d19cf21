"""Streaming readers, one per file format, and what a file's columns say about a field mapping.

Each reader yields ``(locator, record)`` with ``record`` a dict, or a :class:`BadInputError` for a raw record that
cannot be parsed; memory stays bounded by one record (text: one file) or one batch of rows, never a whole file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from indexer.components import FieldMapping
from indexer.errors import BadInputError, ConfigError

Records = Iterator[tuple[str, Any]]

BATCH_ROWS = 1024
# JSON escapes take up to 6 bytes per character (\\uXXXX); the slack is for the record's other fields.
JSON_BYTES_PER_CHAR = 6
LINE_SLACK_BYTES = 1 << 20
# A UTF-8 character is at most 4 bytes, so a bigger text file cannot hold a document under the limit.
UTF8_MAX_BYTES = 4

_MD_HEADING = re.compile(r"#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*")


def open_binary(path: str | Path) -> IO[bytes]:
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def is_compressed(path: str | Path) -> bool:
    """A compressed file is one stream: it cannot be entered at a byte offset, so it is never cut into ranges."""
    return str(path).lower().endswith(".gz")


# ------------------------------------------------------------------------------------------------------------
# Byte ranges of big line-based files (shards inside a file)
# ------------------------------------------------------------------------------------------------------------

SCAN_BYTES = 1 << 23


def line_ranges(path: str | Path, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` byte ranges of about ``size`` bytes that begin and end on line starts. Range ``k`` ends
    where the line holding byte ``k * size`` ends, so planning seeks to each cut and reads one line there, never
    the whole file, and the cuts before an edit stay where they were."""
    total = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f:
        for target in range(size, total, size):
            if target <= bounds[-1]:
                continue  # a line longer than the shard size already reaches past this cut
            f.seek(target - 1)
            cut = _next_line_start(f, target - 1)
            if cut < total:
                bounds.append(cut)
    return list(zip(bounds, bounds[1:] + [total]))


def _next_line_start(f: IO[bytes], pos: int) -> int:
    """The offset just after the first newline at or after ``pos`` (``f`` is positioned at ``pos``)."""
    while block := f.read(1 << 16):
        nl = block.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(block)
    return pos


def csv_ranges(path: str | Path, size: int) -> list[tuple[int, int]]:
    """Like :func:`line_ranges` for CSV, whose quoted cells may hold line breaks: a cut is a line break with an
    even number of quote characters before it (RFC 4180 doubles a quote inside a quoted cell). Knowing that
    takes one pass that counts quotes (``bytes.count``, at memory speed), never a parse."""
    total = os.path.getsize(path)
    bounds = [0]
    odd = 0  # quote parity from the start of the file to the scan position
    base = 0  # file offset of the block
    target = size
    with open(path, "rb") as f:
        while target < total and (block := f.read(SCAN_BYTES)):
            i = 0
            while i < len(block):
                if base + i < target - 1:  # before the cut: only the parity matters
                    j = min(len(block), target - 1 - base)
                    odd ^= block.count(b'"', i, j) & 1
                    i = j
                    continue
                nl = block.find(b"\n", i)
                if nl < 0:
                    odd ^= block.count(b'"', i) & 1
                    break
                odd ^= block.count(b'"', i, nl) & 1
                i = nl + 1
                if not odd:  # a record ends here
                    if base + i < total:
                        bounds.append(base + i)
                    while target <= base + i:
                        target += size
            base += len(block)
    return list(zip(bounds, bounds[1:] + [total]))


def bytes_per_line(path: str | Path, sample: int = 1 << 20) -> float:
    """Mean bytes per line of the file's first ``sample`` bytes (to turn ``--shard-size Nrows`` into bytes)."""
    with open(path, "rb") as f:
        head = f.read(sample)
    return len(head) / max(head.count(b"\n"), 1)


def range_locator(start: int) -> str:
    """Where line numbers of a range are counted from: a range after the first has no line count before it
    (counting would read the whole file), so its records are ``line N from byte START``."""
    return f" from byte {start}" if start else ""


class _ByteRange(io.RawIOBase):
    """The bytes of ``f`` from where it stands up to ``end``, as a stream (so a text wrapper stops at ``end``)."""

    def __init__(self, f: IO[bytes], end: int):
        self._f = f
        self._left = end - f.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(memoryview(buffer)[: max(0, min(len(buffer), self._left))]) or 0
        self._left -= n
        return n


# ------------------------------------------------------------------------------------------------------------
# JSON lines
# ------------------------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path, max_doc_chars: int, start: int = 0, end: int | None = None) -> Records:
    """Records of a JSON-lines file, or of its byte range ``start``-``end`` (line-aligned); locators are 1-based
    ``line N`` (:func:`range_locator`). Blank lines are skipped."""
    limit = max_doc_chars * JSON_BYTES_PER_CHAR + LINE_SLACK_BYTES
    suffix = range_locator(start)
    with open_binary(path) as f:
        if start:
            f.seek(start)
        pos = start
        lineno = 0
        while (end is None or pos < end) and (raw := f.readline(limit + 1)):
            pos += len(raw)
            lineno += 1
            where = f"line {lineno}{suffix}"
            if len(raw) > limit and not raw.endswith(b"\n"):
                skipped = _skip_rest_of_line(f, limit)
                pos += skipped
                size = len(raw) + skipped
                yield where, BadInputError(
                    f"line is {size:,} bytes, too long for a document of at most {max_doc_chars:,} characters "
                    "(raise it with --max-doc-chars)"
                )
                continue
            if pos == len(raw) and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, BadInputError(f"not valid UTF-8 at byte {exc.start}")
                continue
            try:
                yield where, json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield where, BadInputError(f"invalid JSON: {exc}")


def _skip_rest_of_line(f: IO[bytes], chunk: int) -> int:
    skipped = 0
    while part := f.readline(chunk):
        skipped += len(part)
        if part.endswith(b"\n"):
            break
    return skipped


# ------------------------------------------------------------------------------------------------------------
# CSV / TSV
# ------------------------------------------------------------------------------------------------------------


def csv_delimiter(path: str | Path, delimiter: str | None) -> str:
    return delimiter or ("\t" if str(path).lower().endswith((".tsv", ".tsv.gz")) else ",")


def _csv_reader(f: IO[bytes], delimiter: str):
    # A document is one cell and may be megabytes long; the csv module's default cap is 128 KiB.
    csv.field_size_limit(sys.maxsize)
    # surrogateescape keeps going past invalid bytes so that one bad row is reported, not the whole file lost.
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
    return csv.reader(text, delimiter=delimiter)


def read_csv(path: str | Path, delimiter: str, start: int = 0, end: int | None = None) -> Records:
    """Records of a CSV file with a header row, or of its byte range ``start``-``end`` (cut between records, the
    header read from the file's start); locators are the 1-based ``line N`` a row starts on
    (:func:`range_locator`)."""
    header = csv_columns(path, delimiter) if start else None
    suffix = range_locator(start)
    with open_binary(path) as f:
        if start:
            f.seek(start)
        raw = io.BufferedReader(_ByteRange(f, end)) if end is not None and not is_compressed(path) else f
        reader = _csv_reader(raw, delimiter)
        header = header or next(reader, None)
        if header is None:
            return
        while True:
            where = f"line {reader.line_num + 1}{suffix}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield where, BadInputError(f"invalid CSV: {exc}")
                continue
            if not row:
                continue
            if len(row) != len(header):
                yield where, BadInputError(f"row has {len(row)} fields, the header has {len(header)}")
                continue
            bad = _first_invalid_utf8(header, row)
            if bad is not None:
                yield where, BadInputError(f"not valid UTF-8 in column {bad!r}")
            else:
                yield where, dict(zip(header, row))


def _first_invalid_utf8(header: list[str], row: list[str]) -> str | None:
    for name, value in zip(header, row):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return name
    return None


def csv_columns(path: str | Path, delimiter: str) -> list[str]:
    with open_binary(path) as f:
        return next(_csv_reader(f, delimiter), [])


# ------------------------------------------------------------------------------------------------------------
# Parquet and Arrow (datasets' save_to_disk files)
# ------------------------------------------------------------------------------------------------------------


def parquet_row_ranges(path: str | Path, rows_per_shard: int) -> list[tuple[list[int], int, int]]:
    """``(row_groups, first_row, end_row)`` runs of consecutive row groups holding about ``rows_per_shard`` rows."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    ranges: list[tuple[list[int], int, int]] = []
    groups: list[int] = []
    start = end = 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if groups and end - start + n > rows_per_shard:
            ranges.append((groups, start, end))
            groups, start = [], end
        groups.append(i)
        end += n
    ranges.append((groups, start, end))
    return ranges


def read_parquet(path: str | Path, row_groups: list[int] | None, first_row: int, columns: list[str] | None) -> Records:
    """Records of some row groups of a parquet file; locators are 0-based ``row N`` within the file."""
    from indexer.rows import stream_parquet  # pyarrow: imported on first use

    pf = stream_parquet(path)
    row = first_row
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=row_groups, columns=columns):
        for record in batch.to_pylist():
            yield f"row {row}", record
            row += 1


def parquet_rows(path: str | Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def parquet_columns(path: str | Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(path).names


@contextmanager
def _arrow_stream(path: str | Path):
    import pyarrow as pa

    # Memory-mapped: batches are read in place, and skipping or counting rows touches only batch headers.
    with pa.memory_map(str(path)) as source:
        yield pa.ipc.open_stream(source)


def arrow_rows(path: str | Path) -> int:
    with _arrow_stream(path) as reader:
        return sum(batch.num_rows for batch in reader)


def arrow_columns(path: str | Path) -> list[str]:
    with _arrow_stream(path) as reader:
        return reader.schema.names


def read_arrow(path: str | Path, start: int, stop: int, columns: list[str] | None) -> Records:
    """Records ``start`` to ``stop`` of an Arrow stream file; locators are 0-based ``row N`` within the file."""
    with _arrow_stream(path) as reader:
        offset = 0
        for batch in reader:
            n = batch.num_rows
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if columns is not None:
                batch = batch.select(columns)
            for at in range(lo, hi, BATCH_ROWS):
                part = batch.slice(at, min(BATCH_ROWS, hi - at))
                for i, record in enumerate(part.to_pylist(), offset + at):
                    yield f"row {i}", record
            offset += n
            if offset >= stop:
                return


# ------------------------------------------------------------------------------------------------------------
# Text and markdown
# ------------------------------------------------------------------------------------------------------------


def read_text(path: str | Path, rel: str, max_doc_chars: int) -> Records:
    """One record per file: ``{"id": rel, "text": ..., "path": rel}``, plus ``title`` from a markdown file's first
    ``# heading``. The locator is ``rel``."""
    size = Path(path).stat().st_size
    if size > max_doc_chars * UTF8_MAX_BYTES:
        yield rel, BadInputError(
            f"file is {size:,} bytes, too long for a document of at most {max_doc_chars:,} characters "
            "(raise it with --max-doc-chars)"
        )
        return
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield rel, BadInputError(f"not valid UTF-8 at byte {exc.start}")
        return
    record = {"id": rel, "text": text, "path": rel}
    if rel.lower().endswith((".md", ".markdown")) and (title := markdown_title(text)):
        record["title"] = title
    yield rel, record


def markdown_title(text: str) -> str | None:
    """The first level-1 ATX heading outside fenced code (where ``# `` starts a shell comment)."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := _MD_HEADING.fullmatch(line)):
            return m.group(1)
    return None


# ------------------------------------------------------------------------------------------------------------
# Field mapping against a file's columns
# ------------------------------------------------------------------------------------------------------------


def columns_of(path: str | Path, fmt: str | None, delimiter: str | None = None) -> list[str] | None:
    """A file's column names, from its schema or header only; ``None`` for formats without one (jsonl, text)."""
    try:
        if fmt == "parquet":
            return parquet_columns(path)
        if fmt == "csv":
            return csv_columns(path, csv_delimiter(path, delimiter))
    except (OSError, ValueError, csv.Error) as exc:
        raise ConfigError(f"{path} is not a readable {fmt} file: {exc}") from None
    return None


def check_columns(mapping: FieldMapping, columns: list[str], where: str) -> None:
    """Raise :class:`ConfigError` when a field the mapping names is not a column of the file."""
    named = [(mapping.text_field, "--text-field")]
    if mapping.id_field:
        named.append((mapping.id_field, "--id-field"))
    if mapping.title_field:
        named.append((mapping.title_field, "--title-field"))
    named += [(name, "--metadata-field") for name in mapping.metadata_fields if name != "*"]
    for name, flag in named:
        if name not in columns:
            raise ConfigError(
                f"column {name!r} not found in {where}; columns are: {', '.join(columns)}; set {flag}"
            )


def wanted_columns(mapping: FieldMapping, columns: list[str]) -> list[str] | None:
    """The columns the mapping reads, so that columnar formats skip the rest; ``None`` for all of them."""
    if mapping.metadata_fields == ["*"]:
        return None
    names = {mapping.text_field, mapping.title_field, *mapping.metadata_fields}
    names |= {mapping.id_field} if mapping.id_field else {"id", "_id"}
    return [c for c in columns if c in names]
