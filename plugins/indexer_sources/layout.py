"""Where a source's input lies: a URI resolved to files, shard keys and fingerprints, and which source reads it.

Detection lives in one function, :func:`detect`, so that every kind of input is claimed by exactly one source.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

# File extensions per format, lower case. Folders are filtered by them; a file named directly is read as it is.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"),
    "parquet": (".parquet",),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
    "text": (".txt", ".md", ".markdown"),
}
STRUCTURED = ("jsonl", "parquet", "csv")
BEIR_CORPUS = "corpus.jsonl"
HF_DISK_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

_UNSAFE = re.compile(r"[^\w.@=+-]")
_MAX_KEY = 200  # file-name limits are 255 bytes; leave room for suffixes the core adds


@dataclass(frozen=True)
class InputFile:
    path: Path  # absolute
    rel: str  # POSIX path relative to the input's root; the basis of shard keys and text document ids


def format_of(name: str) -> str | None:
    lower = name.lower()
    for fmt, exts in EXTENSIONS.items():
        if lower.endswith(exts):
            return fmt
    return None


def is_glob(uri: str) -> bool:
    return any(c in uri for c in "*?[")


def list_files(uri: str, extensions: tuple[str, ...]) -> list[InputFile]:
    """The files ``uri`` names, sorted by relative path: a file itself, a folder's files with one of
    ``extensions`` (recursive, hidden entries skipped), or a glob's matches. Empty when nothing is there."""
    if is_glob(uri):
        pattern = os.path.expanduser(uri)
        root = _glob_root(pattern)
        matches = (Path(m) for m in glob.glob(pattern, recursive=True))
        files = [_input(m, root) for m in matches if m.is_file()]
        files = [f for f in files if not _hidden(f.rel)]
    else:
        path = Path(uri).expanduser()
        if path.is_dir():
            files = [f for f in walk(path) if f.rel.lower().endswith(extensions)]
        elif path.is_file():
            files = [_input(path, path.parent)]
        else:
            files = []
    return sorted(files, key=lambda f: f.rel)


def walk(root: Path) -> list[InputFile]:
    """Every non-hidden file under ``root``, following symlinks (Hub snapshots are made of them)."""
    out = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(_input(Path(folder, n), root) for n in names if not n.startswith("."))
    return out


def _input(path: Path, root: Path) -> InputFile:
    path = path.absolute()
    return InputFile(path, path.relative_to(root.absolute()).as_posix())


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, p in enumerate(parts) if is_glob(p))]
    return Path(*fixed) if fixed else Path(".")


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def shard_key(rel: str, rows: tuple[int, int] | None = None) -> str:
    """A readable, file-name-safe key: ``en/part-0.parquet``, rows 0 to 99999 → ``en__part-0.parquet@rows0-99999``."""
    key = _UNSAFE.sub("_", rel.replace("/", "__"))
    if len(key) > _MAX_KEY:
        key = key[: _MAX_KEY - 13] + "~" + hashlib.sha1(rel.encode()).hexdigest()[:12]
    return f"{key}@rows{rows[0]}-{rows[1] - 1}" if rows else key


def part_key(rel: str, part: int) -> str:
    """The key of byte range ``part`` of a file: the file's own key for the first (so a file that grows past the
    shard size keeps its rows under the same key), ``<key>@part00001`` for the next."""
    return shard_key(rel) if part == 0 else f"{shard_key(rel)}@part{part:05d}"


def fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def detect(uri: str) -> str | None:
    """The name of the one source that reads ``uri``, or ``None`` when no source, or more than one, could."""
    path = Path(uri).expanduser()
    if path.is_dir():
        if (path / BEIR_CORPUS).is_file():
            return "beir"
        if any((path / marker).is_file() for marker in HF_DISK_MARKERS):
            return "hf-disk"
        formats = {format_of(f.rel) for f in walk(path)} - {None}
        # A README or notes next to data files must not make a data folder ambiguous.
        structured = formats & set(STRUCTURED)
        return _only(structured or formats)
    if path.is_file():
        return format_of(path.name)
    if is_glob(uri):
        # A glob names exactly what to read, so every match must be of one format.
        return _only({format_of(f.rel) for f in list_files(uri, ())})
    # A missing "data/part.jsonl" is a mistyped path, not a dataset name.
    if HUB_NAME.fullmatch(uri) and format_of(uri) is None:
        return "hub"
    return None


def _only(formats: set[str | None]) -> str | None:
    return next(iter(formats)) if len(formats) == 1 else None
