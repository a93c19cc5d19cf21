"""Build configuration: one dataclass that the CLI flags, the TOML file and the Python API all fill.

A TOML file uses the same names as the flags (underscores for dashes), and ``[options.<kind>]`` tables for
component-specific options (each component declares its own, :mod:`indexer.options`; ``indexer plugins --options``
lists them)::

    source = "data/demo/wiki-demo.jsonl"
    model = "sentence-transformers/all-MiniLM-L6-v2"
    max_tokens = 200
    overlap = 32

    [options.lancedb]
    ann_min_rows = 50_000

Precedence: flags given on the command line > environment (``INDEXER_DB``, ``INDEXER_MODEL``,
``INDEXER_WORK_DIR``) > the TOML file > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_DB = "index.lancedb"

ENV = {"db": "INDEXER_DB", "model": "INDEXER_MODEL", "work_dir": "INDEXER_WORK_DIR"}

# A big file is cut into shards of about this many bytes: small enough that a 20 GB file spreads over hundreds
# of workers, big enough that a shard's fixed costs (a sink commit, a completion record) stay negligible.
DEFAULT_SHARD_BYTES = 64 << 20
# The embedder's settings that are the build's own flags (recorded with a table beside its declared options).
EMBEDDER_SETTINGS = ("device", "precision", "batch_tokens")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


@dataclass
class BuildConfig:
    source: str = ""
    source_type: str | None = None  # a registered source name; None = detect from the input
    id_field: str | None = None
    text_field: str = "text"
    title_field: str | None = None
    metadata_fields: list[str] = field(default_factory=list)
    max_doc_chars: int = 5_000_000

    chunker: str = "token"
    max_tokens: int | None = None  # None = as many as the model takes
    overlap: int = 32
    min_tokens: int = 16
    boundaries: str = "token"

    embedder: str = "local"
    model: str = DEFAULT_MODEL
    late_interaction: str | None = None  # a late-interaction plugin (e.g. "colbert"): its embedder and sink
    device: str = "auto"
    precision: str = "auto"
    batch_tokens: int | None = None  # None = the embedder's default (local: 4096 on CPU, 16384 on GPU)

    sinks: list[str] = field(default_factory=lambda: ["lancedb"])
    db: str = DEFAULT_DB
    table: str | None = None  # None = one table per model: "<model-name>-<fingerprint>"

    executor: str = "local"
    workers: int | None = None
    work_dir: str | None = None  # None = <db>/_indexer
    block_docs: int = 2000  # documents read, chunked and embedded together: bounds memory
    shard_size: str | int | None = None  # "64MB", "100000rows"; None = each source's default (DEFAULT_SHARD_BYTES)
    # New vectors are committed to the run state every this many chunks or seconds, whichever comes first:
    # a kill loses at most one checkpoint of one shard.
    checkpoint_chunks: int = 4096
    checkpoint_seconds: float = 60.0
    strict: bool = False
    progress: bool = True

    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind → extra constructor kwargs

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.db) / "_indexer"

    def component_options(self, kind: str) -> dict[str, Any]:
        return dict(self.options.get(kind, {}))

    def replace(self, **changes: Any) -> "BuildConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "BuildConfig":
        """Defaults ← TOML file ← environment ← ``overrides`` (``None`` values in overrides are ignored)."""
        values: dict[str, Any] = {}
        if path:
            values.update(read_toml(path))
        for name, var in ENV.items():
            if os.environ.get(var):
                values[name] = os.environ[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}" + (f" in {path}" if path else "")
                + f"; known settings: {', '.join(sorted(known))}"
            )
        for key in ("sinks", "metadata_fields"):
            if isinstance(values.get(key), str):
                values[key] = [s.strip() for s in values[key].split(",") if s.strip()]
        return cls(**values)


def read_toml(path: str | Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None


def parse_shard_size(value: str | int) -> tuple[int, str]:
    """``--shard-size``: ``(n, "bytes")`` for ``64MB``, ``512KiB``, ``1GB`` or a bare number, ``(n, "rows")`` for
    ``100000rows``. Raises :class:`ConfigError` for anything else."""
    text = str(value).strip().lower().replace("_", "").replace(",", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = text[len(number):].strip()
    try:
        n = float(number)
    except ValueError:
        n = -1
    if unit in ("row", "rows") and n >= 1:
        return int(n), "rows"
    if unit in _SIZE_UNITS and n * _SIZE_UNITS[unit] >= 1:
        return int(n * _SIZE_UNITS[unit]), "bytes"
    raise ConfigError(f"--shard-size {value!r}: give a size such as 64MB, 512KiB or 1GB, or a row count such as 100000rows")
