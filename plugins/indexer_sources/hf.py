"""Sources over Hugging Face datasets: a folder written by ``save_to_disk``, and a dataset on the Hub."""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from indexer.components import FieldMapping, Source
from indexer.errors import ConfigError
from indexer.options import option
from indexer.types import Shard

from . import formats
from .files import RowsOptions, guarded, parquet_shards, read_parquet_shard
from .layout import EXTENSIONS, STRUCTURED, InputFile, detect, fingerprint, format_of, shard_key, walk

_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HfDiskOptions(RowsOptions):
    split: str | None = option(None, "the split of a DatasetDict folder to read (default: all)")


class HfDiskSource(Source):
    """A ``datasets`` folder saved with ``save_to_disk``: a Dataset, or a DatasetDict (all splits, or ``split``).
    An Arrow file of more than ``rows_per_shard`` rows is cut into row ranges of that many."""

    description = "a datasets folder saved with save_to_disk (Dataset or DatasetDict)"
    name = "hf-disk"
    Options = HfDiskOptions

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        super().__init__(uri, mapping=mapping, **options)
        self.split = self.options.split
        self.rows_per_shard = self.options.rows_per_shard

    @classmethod
    def can_read(cls, uri: str) -> bool:
        return detect(uri) == cls.name

    def identity(self) -> str:
        return f"hf-disk:{Path(self.uri).expanduser().absolute()}" + (f":{self.split}" if self.split else "")

    def files(self) -> list[InputFile]:
        """The Arrow files in the order ``datasets`` reads them; raises :class:`ConfigError` for another folder."""
        root = Path(self.uri).expanduser()
        if not root.is_dir():
            raise ConfigError(f"{self.uri} does not exist or is not a folder; give a folder saved with save_to_disk")
        try:
            if (root / "dataset_dict.json").is_file():
                splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
                if self.split is not None and self.split not in splits:
                    raise ConfigError(f"{self.uri} has no split {self.split!r}; its splits are: {', '.join(splits)}")
                folders = [(root / s, f"{s}/") for s in splits if self.split in (None, s)]
            elif (root / "state.json").is_file():
                if self.split is not None:
                    raise ConfigError(f"{self.uri} holds a single Dataset, not splits; leave out --option source.split=…")
                folders = [(root, "")]
            else:
                raise ConfigError(
                    f"{self.uri} is not a folder saved with save_to_disk (it has no state.json or dataset_dict.json)"
                )
            out = []
            for folder, prefix in folders:
                state = json.loads((folder / "state.json").read_text())
                names = [d["filename"] for d in state["_data_files"]]
                out += [InputFile((folder / name).absolute(), prefix + name) for name in names]
            return out
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the save_to_disk layout of {self.uri}: {exc}") from None

    def check(self) -> None:
        files = self.files()
        if not files:
            raise ConfigError(f"{self.uri} holds no Arrow data files")
        try:
            columns = formats.arrow_columns(files[0].path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{files[0].path} is not a readable Arrow file: {exc}") from None
        formats.check_columns(self.mapping, columns, files[0].rel)

    def shards(self) -> list[Shard]:
        out = []
        for f in self.files():
            rows, fp = formats.arrow_rows(f.path), fingerprint(f.path)
            spec = {"path": str(f.path), "rel": f.rel}
            if rows <= self.rows_per_shard:
                out.append(Shard(shard_key(f.rel), fp, {**spec, "start": 0, "stop": rows}))
                continue
            for start in range(0, rows, self.rows_per_shard):
                stop = min(start + self.rows_per_shard, rows)
                out.append(Shard(shard_key(f.rel, (start, stop)), fp, {**spec, "start": start, "stop": stop}))
        return out

    def records(self, shard: Shard) -> Iterator[tuple[str, Any]]:
        return guarded(self._read(shard.spec))

    def _read(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        columns = formats.wanted_columns(self.mapping, formats.arrow_columns(spec["path"]))
        yield from formats.read_arrow(spec["path"], spec["start"], spec["stop"], columns)


@dataclass(frozen=True)
class HubOptions(RowsOptions):
    revision: str | None = option(None, "branch, tag or commit of the dataset (default: main)")
    config: str | None = option(None, "a config name from the dataset card (sample-10BT), or a folder of the repo")
    split: str | None = option(None, "a split name (train)")
    data_files: tuple[str, ...] | None = option(None, "glob(s) relative to the repo root (sample/10BT/*.parquet), "
                                                "instead of a config")
    cache_dir: str | None = option(None, "the Hub cache (default: huggingface_hub's)", env="HF_HUB_CACHE")


class HubSource(Source):
    """A dataset on the Hugging Face Hub (``owner/name``), read from its parquet / jsonl / csv data files.

    The files come through ``huggingface_hub.snapshot_download``: from the local cache alone when
    ``HF_HUB_OFFLINE`` is set, else downloaded (once; the cache keeps them). Which files: ``data_files`` when
    given, else those of ``config`` (or the default config) as the dataset card's ``configs:`` lists them, else
    every data file; ``split`` narrows them down. The revision's commit goes into :meth:`identity` and every shard.
    """

    description = "a Hugging Face Hub dataset (owner/name), via the local HF cache (parquet/jsonl/csv files)"
    name = "hub"
    Options = HubOptions

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        # huggingface_hub reads HF_HUB_CACHE once, at import; the option reads it at construction (its env).
        super().__init__(uri, mapping=mapping, **options)
        o = self.options
        self.revision, self.config, self.split = o.revision, o.config, o.split
        self.data_files = list(o.data_files) if o.data_files is not None else None
        self.rows_per_shard = o.rows_per_shard
        self.cache_dir = o.cache_dir

    @classmethod
    def can_read(cls, uri: str) -> bool:
        return detect(uri) == cls.name

    @staticmethod
    def offline() -> bool:
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE

    def identity(self) -> str:
        selection = {"config": self.config, "split": self.split, "data_files": self.data_files}
        chosen = ",".join(f"{k}={v}" for k, v in selection.items() if v)
        return f"hub:{self.uri}@{self.commit}" + (f":{chosen}" if chosen else "")

    @property
    def commit(self) -> str:
        return self._snapshot[1]

    @cached_property
    def _snapshot(self) -> tuple[Path, str, list[InputFile]]:
        """The snapshot folder, its commit hash and the data files chosen from it."""
        folder = self._download(["README.md"], self.revision)
        patterns, by_path = self._patterns(folder)
        commit = folder.name
        folder = self._download(patterns, commit)
        files = [
            f
            for f in walk(folder)
            if format_of(f.rel) in STRUCTURED
            and any(fnmatch.fnmatch(f.rel, p) for p in patterns)
            and (not by_path or _names_split(f.rel, self.split))
        ]
        return folder, commit, sorted(files, key=lambda f: f.rel)

    def _download(self, patterns: list[str], revision: str | None) -> Path:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

        try:
            return Path(
                snapshot_download(
                    self.uri,
                    repo_type="dataset",
                    revision=revision,
                    cache_dir=self.cache_dir,
                    local_files_only=self.offline(),
                    allow_patterns=patterns,
                )
            )
        except LocalEntryNotFoundError as exc:
            if self.offline():
                raise ConfigError(
                    f"dataset {self.uri} is not in the local Hugging Face cache (HF_HUB_OFFLINE is set); download it "
                    f"first with `huggingface-cli download --repo-type dataset {self.uri}` or unset HF_HUB_OFFLINE"
                    f" ({exc})"
                ) from None
            raise ConfigError(
                f"dataset {self.uri} is neither in the local cache nor reachable on the Hub: {exc}"
            ) from None
        except (HfHubHTTPError, HFValidationError) as exc:
            raise ConfigError(f"cannot get dataset {self.uri} from the Hub: {exc}") from None

    def _patterns(self, folder: Path) -> tuple[list[str], bool]:
        """Globs of the data files to read, and whether ``split`` still has to be matched against their paths."""
        if self.data_files:
            return self.data_files, bool(self.split)
        configs = _card_configs(folder / "README.md")
        if not configs:
            base = f"{self.config}/" if self.config else ""
            return [f"{base}*{ext}" for fmt in STRUCTURED for ext in EXTENSIONS[fmt]], bool(self.split)
        names = [str(c.get("config_name")) for c in configs]
        if self.config is not None:
            config = next((c for c in configs if c.get("config_name") == self.config), None)
            if config is None:
                raise ConfigError(
                    f"dataset {self.uri} has no config {self.config!r}; its configs are: {', '.join(names)}"
                )
        else:
            defaults = [c for c in configs if c.get("default") or c.get("config_name") == "default"]
            if len(configs) > 1 and not defaults:
                raise ConfigError(f"dataset {self.uri} has several configs; pick one with --option source.config=NAME: {', '.join(names)}")
            config = (defaults or configs)[0]
        entries = _config_data_files(config)
        if self.split and any(split for split, _ in entries):
            splits = sorted({split for split, _ in entries if split})
            entries = [(split, p) for split, p in entries if split == self.split]
            if not entries:
                raise ConfigError(
                    f"config {config.get('config_name')!r} of {self.uri} has no split {self.split!r}; "
                    f"its splits are: {', '.join(splits)}"
                )
            return [p for _, p in entries], False
        return [p for _, p in entries], bool(self.split)

    def check(self) -> None:
        folder, commit, files = self._snapshot
        if not files:
            raise ConfigError(
                f"dataset {self.uri} (commit {commit}) has no parquet, jsonl or csv data files under {folder} for "
                "the chosen config/split/data_files; set --option source.config=…, source.split=… or source.data_files=…"
            )
        columns = formats.columns_of(files[0].path, format_of(files[0].rel))
        if columns is not None:
            formats.check_columns(self.mapping, columns, files[0].rel)

    def shards(self) -> list[Shard]:
        out = []
        for f in self._snapshot[2]:
            spec = {"repo_id": self.uri, "revision": self.commit, "format": format_of(f.rel)}
            # A snapshot file links to a blob named by its content hash: the best fingerprint there is.
            fp = os.path.basename(os.path.realpath(f.path)) if f.path.is_symlink() else fingerprint(f.path)
            if spec["format"] == "parquet":
                out += parquet_shards(f, self.rows_per_shard, fp, **spec)
            else:
                out.append(Shard(shard_key(f.rel), fp, {"path": str(f.path), "rel": f.rel, **spec}))
        return out

    def records(self, shard: Shard) -> Iterator[tuple[str, Any]]:
        spec = {**shard.spec, "path": self._local_path(shard.spec)}
        return guarded(self._read(spec))

    def _local_path(self, spec: dict[str, Any]) -> str:
        """The shard's file on this machine; a worker elsewhere fetches just that file (pinned to the commit).
        A failure raises, so that the executor retries the shard rather than recording it as empty."""
        if os.path.exists(spec["path"]):
            return spec["path"]
        from huggingface_hub import hf_hub_download

        return hf_hub_download(
            spec["repo_id"],
            spec["rel"],
            repo_type="dataset",
            revision=spec["revision"],
            cache_dir=self.cache_dir,
            local_files_only=self.offline(),
        )

    def _read(self, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        if spec["format"] == "parquet":
            yield from read_parquet_shard(spec, self.mapping)
        elif spec["format"] == "jsonl":
            yield from formats.read_jsonl(spec["path"], self.mapping.max_doc_chars)
        else:
            yield from formats.read_csv(spec["path"], formats.csv_delimiter(spec["path"], None))


def _card_configs(readme: Path) -> list[dict[str, Any]]:
    """The ``configs:`` of a dataset card's YAML header (empty when there is none)."""
    import yaml

    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if not text.startswith("---"):
        return []
    end = text.find("\n---", 3)
    try:
        header = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return []
    configs = header.get("configs") if isinstance(header, dict) else None
    return [c for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []


def _config_data_files(config: dict[str, Any]) -> list[tuple[str | None, str]]:
    """``(split, glob)`` pairs of a card config, in any of the forms the card format allows."""
    data_dir = config.get("data_dir")
    files = config.get("data_files") or "*"
    if isinstance(files, dict):
        files = [{"split": k, "path": v} for k, v in files.items()]
    elif isinstance(files, str):
        files = [files]
    out = []
    for item in files:
        split, paths = (item.get("split"), item.get("path")) if isinstance(item, dict) else (None, item)
        for p in [paths] if isinstance(paths, str) else paths or []:
            out.append((split, f"{data_dir.rstrip('/')}/{p}" if data_dir else p))
    return out


def _names_split(rel: str, split: str) -> bool:
    """Whether a data file's path names ``split`` the way ``datasets`` infers splits (``train-00000.parquet``,
    ``data/train/...``), not as part of a longer word (``pretrain``)."""
    return re.search(rf"(^|[/_.\- 0-9]){re.escape(split)}([/_.\- 0-9]|$)", rel) is not None
