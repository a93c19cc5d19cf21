"""The work directory: what a run produced, shard by shard, so a killed run resumes and a rerun skips.

Layout (every file is written to a temporary name and renamed into place, so a file is whole or absent)::

    <work>/chunks/<chunkset>/<shard>.parquet          chunks of one shard (CHUNK_SCHEMA)
    <work>/chunks/<chunkset>/<shard>.json             what reading the shard found: counts, bad records
    <work>/chunks/<chunkset>.json                     the chunk set's source and chunking settings
    <work>/vectors/<model>/<chunkset>/<shard>.parquet id, content_hash, vector — same row order as the chunks
    <work>/vectors/<model>/<chunkset>/_spare/*.parquet vectors the current shard files may lack: checkpoints of
                                                      shards not finished yet, and the previous file of a shard
                                                      that was redone (its chunks may have moved to the next
                                                      shard); emptied when a run finishes
    <work>/tables/<table>/done/<shard>.json           the shard is in the table's sinks (completion record)
    <work>/aliases.json                               alias → table (e.g. "current")

A *chunk set* is one source read with one set of chunking settings; its key is a hash of both. A re-embed with
a new model reads the chunk set again and writes a new vector set, so the source is never read twice.

When an executor's workers cannot see this machine's files, they keep the same layout in a :class:`Location`
(a Modal Volume; :class:`LocalFolder` for a folder), and the pipeline copies a shard's files between it and this
work directory, which stays the one that completion records and sinks are written from.
"""

from __future__ import annotations

import bisect
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from indexer.rows import CHUNK_SCHEMA, embedded_schema, stream_parquet, vector_rows



# What atomic_write_text and atomic_path name their temporary files: <name>.<8 random characters>.tmp (mkstemp).
_TEMPORARY = re.compile(r".+\.[a-z0-9_]{8}\.tmp")


def short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block finishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _hash_key(content_hash: str) -> int:
    """A content hash as a 64-bit number: its 16 hex digits as they are (:func:`indexer.types.content_hash`), any
    other string hashed down to 8 bytes."""
    if len(content_hash) == 16:
        try:
            return int(content_hash, 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(content_hash.encode(), digest_size=8).digest(), "big")


def vector_schema(dimension: int, kind: str = "dense") -> pa.Schema:
    return pa.schema([CHUNK_SCHEMA.field("id"), CHUNK_SCHEMA.field("content_hash"),
                      embedded_schema(dimension, kind).field("vector")])


def vector_field_kind(field: pa.Field) -> tuple[int, str]:
    """(dimension, kind) of a stored ``vector`` field."""
    if pa.types.is_fixed_size_list(field.type):
        return field.type.list_size, "dense"
    return field.type.value_type.list_size, "multivector"


class StoredVectors:
    """Vectors of earlier runs (a shard's previous vector file, or every vector file of the run state), looked up
    by content hash without reading the files whole.

    A changed shard is cut again and only its new chunks are embedded; the others take their vectors from here.
    Only the hash column is held (8 bytes a chunk and its row's 8, against 1,536 bytes for a 384-dim float32 vector
    and far more for a multivector); vectors are read a row group (one block of the earlier run) at a time, when a block
    asks for them. Chunks keep their order from one run to the next, so consecutive blocks ask for the same or the
    next row groups, and the last two read are kept, which keeps a rebuild's peak well under reading the file whole
    (docs/benchmarks.md#figures-behind-the-code). A context manager; missing files are empty.
    The files stay open, so a file renamed or removed meanwhile (by a worker finishing its shard) still reads.
    """

    def __init__(self, paths: Path | list[Path]):
        import numpy as np

        self._files = []
        for path in [paths] if isinstance(paths, Path) else paths:
            try:
                self._files.append(stream_parquet(path))
            except (FileNotFoundError, OSError):  # absent, or removed since it was listed
                pass
        keys = []
        self._starts = [0]  # first row of each row group (of all files, in turn), and the row count last
        self._groups: list[tuple[int, int]] = []  # (file, row group) of each entry of _starts
        for f, file in enumerate(self._files):
            for g in range(file.metadata.num_row_groups):
                hashes = file.read_row_group(g, columns=["content_hash"]).column(0).to_pylist()
                keys.append(np.fromiter(map(_hash_key, hashes), np.uint64, len(hashes)))
                self._starts.append(self._starts[-1] + len(hashes))
                self._groups.append((f, g))
        # Sorted keys and the row of each (16 bytes a chunk, where a dict of hash strings took ~10 times more: the
        # run state's lookup covers every chunk of a corpus). np.unique keeps a key's first row; chunks with one
        # text share a hash, and any of them holds the vector.
        self._keys, self._rows = np.unique(np.concatenate(keys) if keys else np.empty(0, np.uint64),
                                           return_index=True)
        self._group = functools.lru_cache(maxsize=2)(self._read_group)

    def _row(self, content_hash: str) -> int | None:
        key = _hash_key(content_hash)
        i = int(self._keys.searchsorted(key))
        return int(self._rows[i]) if i < len(self._keys) and int(self._keys[i]) == key else None

    def __contains__(self, content_hash: str) -> bool:
        return self._row(content_hash) is not None

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, hashes: list[str]) -> list[Any]:
        """The stored vector of each hash (each must be ``in`` the set), in order: a float32 array, ``(dimension,)``
        or, for a multivector, ``(tokens, dimension)``."""
        out = []
        for h in hashes:
            row = self._row(h)
            g = bisect.bisect_right(self._starts, row) - 1
            out.append(self._group(g)[row - self._starts[g]])
        return out

    def _read_group(self, g: int) -> Any:
        f, group = self._groups[g]
        return vector_rows(self._files[f].read_row_group(group, columns=["vector"]).column(0))

    def close(self) -> None:
        self._group.cache_clear()
        for file in self._files:
            file.close()
        self._files = []

    def __enter__(self) -> "StoredVectors":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WorkDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- chunk sets ------------------------------------------------------------------------------------------
    def chunk_file(self, chunkset: str, shard: str) -> Path:
        return self.root / "chunks" / chunkset / f"{shard}.parquet"

    def chunk_record_file(self, chunkset: str, shard: str) -> Path:
        return self.root / "chunks" / chunkset / f"{shard}.json"

    def chunk_record(self, chunkset: str, shard: str) -> dict[str, Any] | None:
        return _read_json(self.chunk_record_file(chunkset, shard))

    def chunkset_shards(self, chunkset: str) -> list[str]:
        folder = self.root / "chunks" / chunkset
        return sorted(p.name[: -len(".json")] for p in folder.glob("*.json")) if folder.is_dir() else []

    def chunkset_info_file(self, chunkset: str) -> Path:
        return self.root / "chunks" / f"{chunkset}.json"

    def write_chunkset_info(self, chunkset: str, info: dict[str, Any]) -> None:
        atomic_write_text(self.chunkset_info_file(chunkset), json.dumps(info, indent=1, sort_keys=True))

    def chunkset_info(self, chunkset: str) -> dict[str, Any] | None:
        return _read_json(self.chunkset_info_file(chunkset))

    # -- vector sets -----------------------------------------------------------------------------------------
    def vector_file(self, model: str, chunkset: str, shard: str) -> Path:
        return self.root / "vectors" / model / chunkset / f"{shard}.parquet"

    def previous_vectors(self, model: str, chunkset: str, shard: str) -> "StoredVectors":
        """The shard's previous vectors, by content hash (none when the shard has no vector file yet)."""
        return StoredVectors(self.vector_file(model, chunkset, shard))

    def all_vectors(self, model: str) -> "StoredVectors":
        """Every vector the run state holds for ``model``: each chunk set's shard files and spare files. A content
        hash covers the text and the chunking settings, so a hash found anywhere here has the right vector."""
        folder = self.root / "vectors" / model
        return StoredVectors(sorted(folder.glob("*/*.parquet")) + sorted(folder.glob("*/_spare/*.parquet")))

    def spare_folder(self, model: str, chunkset: str) -> Path:
        return self.root / "vectors" / model / chunkset / "_spare"

    def checkpoint_file(self, model: str, chunkset: str, shard: str, run: str, piece: int) -> Path:
        return self.spare_folder(model, chunkset) / f"{shard}.{run}.piece{piece:06d}.parquet"

    def checkpoint_files(self, model: str, chunkset: str, shard: str, run: str) -> list[Path]:
        return sorted(self.spare_folder(model, chunkset).glob(f"{glob.escape(shard)}.{run}.piece*.parquet"))

    def retire_vectors(self, model: str, chunkset: str, shard: str, run: str) -> None:
        """Move the shard's vector file aside, into the spare folder, before a new one takes its name: when the
        shard's byte range moved, its old chunks are now another shard's, which has not run yet."""
        path = self.vector_file(model, chunkset, shard)
        if path.exists():
            spare = self.spare_folder(model, chunkset) / f"{shard}.{run}.previous.parquet"
            spare.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, spare)

    def clear_spare(self, model: str, chunkset: str) -> None:
        """After a run that finished every shard: each spare vector is in a shard file now, or no longer used."""
        folder = self.spare_folder(model, chunkset)
        for path in folder.glob("*.parquet") if folder.is_dir() else []:
            path.unlink(missing_ok=True)

    # -- housekeeping ----------------------------------------------------------------------------------------
    def remove_temporaries(self) -> int:
        """Remove the temporary files a killed run left (only names :func:`atomic_path` makes, only inside the
        work directory); returns how many. Call it while no other run uses the directory (:meth:`lock`)."""
        removed = 0
        for folder in ("chunks", "vectors", "tables"):
            for path in (self.root / folder).rglob("*.tmp"):
                if _TEMPORARY.fullmatch(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
        for path in self.root.glob("*.tmp"):  # aliases.json's
            if _TEMPORARY.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Hold the work directory for one run; yields whether this run is the only one using it (where the OS
        has no ``flock``, always True)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield True
            return
        with open(self.root / "run.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def embedded_batches(self, model: str, chunkset: str, shard: str, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
        """The shard's chunks joined with their vectors, streamed (both files share one row order)."""
        chunks = stream_parquet(self.chunk_file(chunkset, shard))
        vectors = stream_parquet(self.vector_file(model, chunkset, shard))
        schema = embedded_schema(*vector_field_kind(vectors.schema_arrow.field("vector")))
        for cb, vb in zip(
            chunks.iter_batches(batch_size=batch_rows), vectors.iter_batches(batch_size=batch_rows, columns=["id", "vector"])
        ):
            if cb.column(0) != vb.column(0):
                raise RuntimeError(f"work directory is inconsistent for shard {shard}: chunk and vector files differ")
            yield pa.RecordBatch.from_arrays([*cb.columns, vb.column(1)], schema=schema)

    # -- tables ----------------------------------------------------------------------------------------------
    def done_file(self, table: str, shard: str) -> Path:
        return self.root / "tables" / table / "done" / f"{shard}.json"

    def done_record(self, table: str, shard: str) -> dict[str, Any] | None:
        return _read_json(self.done_file(table, shard))

    def mark_done(self, table: str, shard: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.done_file(table, shard), json.dumps(record, sort_keys=True))

    def done_shards(self, table: str) -> list[str]:
        folder = self.root / "tables" / table / "done"
        return sorted(p.name[: -len(".json")] for p in folder.glob("*.json")) if folder.is_dir() else []

    def forget_done(self, table: str, shard: str) -> None:
        self.done_file(table, shard).unlink(missing_ok=True)

    def table_folder(self, table: str) -> Path:
        """Where the records of ``table`` live: table.json (what it holds), search.json, eval.json."""
        return self.root / "tables" / table

    def forget_table(self, table: str) -> None:
        """Every record of a dropped table."""
        shutil.rmtree(self.table_folder(table), ignore_errors=True)

    def write_table_info(self, table: str, info: dict[str, Any]) -> None:
        atomic_write_text(self.table_folder(table) / "table.json", json.dumps(info, indent=1, sort_keys=True))

    def table_info(self, table: str) -> dict[str, Any] | None:
        return _read_json(self.table_folder(table) / "table.json")

    def eval_record(self, table: str) -> dict[str, Any] | None:
        """The last held-out evaluation of ``table`` against the table it was re-embedded from."""
        return _read_json(self.table_folder(table) / "eval.json")

    def write_eval_record(self, table: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.table_folder(table) / "eval.json", json.dumps(record, indent=1))

    def search_settings_file(self, table: str) -> Path:
        """How ``table`` is searched unless a search says otherwise (written by ``indexer tune-search``)."""
        return self.table_folder(table) / "search.json"

    def search_settings(self, table: str) -> dict[str, Any] | None:
        return _read_json(self.search_settings_file(table))

    def write_search_settings(self, table: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.search_settings_file(table), json.dumps(record, indent=1, sort_keys=True))

    # -- aliases ---------------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        return _read_json(self.root / "aliases.json") or {}

    def set_alias(self, alias: str, table: str) -> None:
        aliases = self.aliases()
        aliases[alias] = table
        atomic_write_text(self.root / "aliases.json", json.dumps(aliases, indent=1, sort_keys=True))


# -- where remote workers keep the work directory ------------------------------------------------------------


class Location:
    """A work directory kept where an executor's workers run and this process does not (a Modal Volume), as this
    process reaches it: whole files, listed, sent and fetched by their path relative to it.

    The pipeline plans remote jobs against :attr:`path`, sends each job the files it reads there and fetches the
    files it wrote (:func:`indexer.pipeline.run_jobs`); an executor only provides the location
    (:meth:`indexer.components.Executor.work_location`). Three whole-file operations are all the pipeline needs, so
    this is a seam of its own rather than fsspec (installed, as a dependency of ``datasets``): a Modal Volume has no
    fsspec filesystem, and an fsspec-backed location is a subclass of a few lines.
    """

    #: The work directory as the workers see it: their ``BuildConfig.work_dir``.
    path: str = ""

    def listing(self, folder: str = "") -> set[str]:
        """Paths (relative to the location) of every file under ``folder``; empty when there is none."""
        raise NotImplementedError

    def upload(self, files: list[tuple[Path, str]]) -> None:
        """Send each local file to its relative path there, replacing what is there."""
        raise NotImplementedError

    def download(self, rel: str, dest: Path) -> None:
        """Write the file at ``rel`` there into the local file ``dest``."""
        raise NotImplementedError


class LocalFolder(Location):
    """A folder of this machine (a mounted network file system, or a stand-in for a Volume in tests and local
    runs); the workers see it at ``path`` (default: the folder itself)."""

    def __init__(self, root: str | Path, path: str | None = None):
        self.root = Path(root)
        self.path = path or str(self.root)

    def listing(self, folder: str = "") -> set[str]:
        base = self.root / folder
        return {p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()} if base.is_dir() else set()

    def upload(self, files: list[tuple[Path, str]]) -> None:
        import shutil

        for src, rel in files:
            with atomic_path(self.root / rel) as tmp:
                shutil.copyfile(src, tmp)

    def download(self, rel: str, dest: Path) -> None:
        import shutil

        shutil.copyfile(self.root / rel, dest)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
