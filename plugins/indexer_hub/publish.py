"""Publishing a table as a Hub dataset, and importing a published dataset into LanceDB without re-embedding."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError
from indexer.log import get_logger
from indexer.options import Options, option

from . import upload as up
from .card import build_card, public_meta, read_card
from .layout import DataFileWriter, Stats, to_embedded, to_published

DEFAULT_MAX_FILE_MB = 500
LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
log = get_logger("hub")


@dataclass(frozen=True)
class PublishSettings(Options):
    """What ``indexer publish`` flags and ``--option hub.NAME=VALUE`` set: the ``hub`` sink's options."""

    repo_id: str = option("", "user/name of the dataset repository (created when missing); required")
    private: bool = option(False, "create the repository private (an existing one keeps its visibility)")
    revision: str = option("main", "branch to commit to (created when missing)")
    license: str | None = option(None, "license id for the card, e.g. cc-by-sa-4.0")
    dry_run: bool = option(False, "write the folder and print the commit plan; no network")
    out: str | None = option(None, "the dataset folder written before upload, kept: a rerun overwrites it "
                                   "(default: <work dir>/hub/<table>/dataset)")
    max_shard_mb: float = option(DEFAULT_MAX_FILE_MB, "most data per parquet file, in MB of Arrow memory (files "
                                 "are smaller, compressed)", gt=0)
    commit_files: int = option(up.DEFAULT_COMMIT_FILES, "most files per commit (the Hub recommends under 100)",
                               ge=1, le=1000)
    commit_mb: float = option(round(up.DEFAULT_COMMIT_BYTES / 1e6), "most MB per commit", gt=0)
    source_name: str | None = option(None, "NAME[@REVISION] of the source dataset for the card (default: from the "
                                     "build; give it when the build read local files)")
    pretty_name: str | None = option(None, "title of the dataset card")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "PublishSettings":
        """From ``--option hub.NAME=VALUE`` pairs or the ``publish`` command's flags (``None``: not given)."""
        return cls.parse({k: v for k, v in options.items() if v is not None}, owner="hub")

    def check(self) -> None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        if not self.repo_id or "/" not in self.repo_id:
            raise ConfigError("a Hub dataset needs a repository id user/name: pass --repo-id user/name "
                              "(with the sink: --option hub.repo_id=user/name)")
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as exc:
            raise ConfigError(f"repository id {self.repo_id!r} is not valid: {exc}") from None
        if self.license is not None and not LICENSE_RE.match(self.license):
            raise ConfigError(f"license {self.license!r} is not a Hub license id (lowercase, e.g. cc-by-sa-4.0, mit, apache-2.0)")
        if not self.revision or any(c.isspace() for c in self.revision):
            raise ConfigError(f"revision {self.revision!r} is not a branch name")
        if self.out and os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ConfigError(f"--out {self.out} is a file; give a folder")
        if not self.dry_run:
            up.require_token()

    @property
    def max_file_bytes(self) -> int:
        return max(1, int(self.max_shard_mb * 1e6))

    @property
    def commit_bytes(self) -> int:
        return max(1, int(self.commit_mb * 1e6))


def write_folder(batches: Iterable[Any], folder: Path, *, meta: dict[str, Any], table: str,
                 settings: PublishSettings) -> Stats:
    """Write published rows (``published_schema`` batches) and their card into ``folder``."""
    from indexer.state import atomic_write_text

    dimension = int(meta["model"]["dimension"])
    writer = DataFileWriter(folder, dimension, max_file_bytes=settings.max_file_bytes)
    try:
        for batch in batches:
            writer.write(batch)
        stats = writer.close()
    except BaseException:
        writer.abort()
        raise
    if settings.license is None:
        log.warning("note: no --license given; the card says 'unknown' (the demo corpus, from Wikipedia, is "
                    "cc-by-sa-4.0)")
    card = build_card(public_meta(meta, table, settings.source_name), stats, repo_id=settings.repo_id,
                      license=settings.license, pretty_name=settings.pretty_name)
    atomic_write_text(folder / up.CARD, str(card))
    os.chmod(folder / up.CARD, 0o644)  # written through a private temporary file
    return stats


def finish(folder: Path, stats: Stats, settings: PublishSettings, *,
           say: Callable[[str], None] = log.info) -> up.UploadReport | None:
    """Print the commit plan (dry run) or upload. Returns the upload report, ``None`` for a dry run."""
    say(f"wrote {folder}: {stats.rows:,} rows ({stats.documents:,} documents, {stats.tokens:,} tokens) in "
        f"{len(stats.files):,} data file(s), {up.human_bytes(stats.download_size)}")
    if settings.dry_run:
        commits = up.plan_commits(up.folder_files(folder), commit_files=settings.commit_files,
                                  commit_bytes=settings.commit_bytes)
        say(up.render_plan(commits, repo_id=settings.repo_id, revision=settings.revision, private=settings.private))
        say("dry run: nothing was uploaded")
        return None
    report = up.upload_in_commits(folder, settings.repo_id, revision=settings.revision, private=settings.private,
                              commit_files=settings.commit_files, commit_bytes=settings.commit_bytes, say=say)
    say(f"published https://huggingface.co/datasets/{settings.repo_id}"
        + (f"/tree/{settings.revision}" if settings.revision != "main" else "")
        + f": {report.commits_made} commit(s), {len(report.uploaded)} file(s) uploaded "
        f"({up.human_bytes(report.bytes_uploaded)}), {len(report.skipped)} already there"
        + (f", {len(report.deleted)} stale file(s) deleted" if report.deleted else ""))
    return report


# -- publish an existing table -------------------------------------------------------------------------------


def publish_table(db: str, table: str | None, settings: PublishSettings, *,
                  say: Callable[[str], None] = log.info) -> tuple[Path, Stats, up.UploadReport | None]:
    """Publish a LanceDB table written by indexer: rows in the table's storage order, vectors as stored."""
    from indexer.retrieval import resolve_table
    from indexer_lancedb import LanceDBSink

    settings.check()
    if not Path(db).exists() and "://" not in db:
        raise ConfigError(f"database {db} does not exist; build an index first or pass --db")
    name = resolve_table(db, table)
    meta = LanceDBSink.read_meta(db, name)
    if meta["model"].get("kind", "dense") != "dense":
        raise ConfigError(f"table {name} holds {meta['model']['kind']} vectors; a Hub dataset holds one vector per chunk")
    if settings.out:
        folder = Path(settings.out)
    elif "://" in db:
        raise ConfigError(f"--db {db} is not a local folder; pass --out FOLDER for the dataset files")
    else:
        folder = Path(db) / "_indexer" / "hub" / name / "dataset"
    from indexer.rows import embedded_schema

    dimension = int(meta["model"]["dimension"])
    columns = embedded_schema(dimension).names
    batches = (to_published(b, dimension) for b in LanceDBSink(db=db, table=name).scan(columns))
    stats = write_folder(batches, folder, meta=meta, table=name, settings=settings)
    return folder, stats, finish(folder, stats, settings, say=say)


# -- import a published dataset ------------------------------------------------------------------------------


def locate(repo_or_folder: str, revision: str | None = None) -> Path:
    """A published folder: the path itself, or the dataset's snapshot from the Hub (the local cache only when
    offline, ``HF_HUB_OFFLINE=1``)."""
    path = Path(repo_or_folder).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{repo_or_folder} is a file; give a published folder or a Hub dataset id user/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_or_folder, repo_type=up.REPO_TYPE, revision=revision))
    except HFValidationError:
        raise ConfigError(f"{repo_or_folder} is neither a folder nor a Hub dataset id user/name") from None
    except LocalEntryNotFoundError:
        raise ConfigError(f"dataset {repo_or_folder} is not in the Hugging Face cache and the Hub cannot be reached "
                          "(HF_HUB_OFFLINE is set or the network is down); download it first or give its folder") from None
    except HfHubHTTPError as exc:
        raise ConfigError(f"could not download dataset {repo_or_folder}: {exc}") from None


def _data_files(folder: Path, card: Any) -> list[Path]:
    import glob

    configs = card.data.to_dict().get("configs") or []
    patterns = [f["path"] for c in configs for f in c.get("data_files", []) if f.get("split") == "train"]
    files = sorted({Path(p) for pattern in patterns or ["data/train-*.parquet"]
                    for p in glob.glob(str(folder / pattern))})
    if not files:
        raise ConfigError(f"{folder} has no data files matching {patterns}")
    return files


def import_dataset(repo_or_folder: str, db: str, *, table: str | None = None, model: str | None = None,
                   revision: str | None = None, replace: bool = False,
                   say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Load a published dataset into a LanceDB table as it is, without embedding anything, and record the
    model so ``indexer search`` embeds queries with it. Refuses when the query model (``model``, else the one
    the card names) has another fingerprint than the card's. Returns the table's metadata."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from indexer.plugins import get_host
    from indexer.types import ModelInfo
    from indexer_lancedb import LanceDBSink

    folder = locate(repo_or_folder, revision)
    card, section = read_card(folder)
    info = ModelInfo(**section["model"])
    embedder_meta = dict(section.get("embedder") or {"name": "local", "options": {}})
    query_model = model or embedder_meta.get("model") or info.name
    embedder_cls = get_host().component("embedder", embedder_meta.get("name", "local"))
    options = {**embedder_meta.get("options", {}), "device": "auto"}  # the publisher's GPU may not be here
    embedder = embedder_cls(query_model, **options)
    try:
        embedder.check()
    except ConfigError as exc:
        raise ConfigError(f"the dataset's vectors were made with {info.name} (fingerprint {info.fingerprint[:12]}); "
                          f"that model is needed to embed queries but cannot be loaded here ({exc}); "
                          "pass --model with a path or id of the same model") from None
    found = embedder.info
    if found.fingerprint != info.fingerprint or found.dimension != info.dimension:
        raise ConfigError(
            f"model {query_model} has fingerprint {found.fingerprint[:12]} ({found.dimension} dimensions), but the "
            f"dataset's vectors were made with {info.name} fingerprint {info.fingerprint[:12]} ({info.dimension} "
            "dimensions): queries embedded with it would not match. Pass --model with the model the card names."
        )
    name = table or section.get("table") or info.slug()
    sink = LanceDBSink(db=db, table=name)
    sink.check()
    if name in [t["table"] for t in sink.tables()]:
        if not replace:
            raise ConfigError(f"table {name} already exists in {db}; pass --replace to overwrite it or --table NAME")
        sink.delete_table(name)
    source = section.get("source") or {}
    meta = {
        "model": section["model"],
        "embedder": {**embedder_meta, "model": query_model, "options": options},
        "chunking": section.get("chunking"),
        "source": f"hub:{source.get('name')}@{source.get('revision')}" if source.get("revision") else source.get("name"),
        "chunkset": section.get("chunkset"),
        "imported_from": str(repo_or_folder) + (f"@{revision}" if revision else ""),
    }
    dataset = pads.dataset([str(p) for p in _data_files(folder, card)], format="parquet")
    shards: list[str] = []
    seen: set[str] = set()
    for batch in dataset.to_batches(columns=["shard"]):
        for s in pc.unique(batch.column("shard")).to_pylist():
            if s not in seen:
                seen.add(s)
                shards.append(s)
    rows = 0
    sink.open(info, meta)
    with sink:
        for shard in shards:
            # Rows of a shard sit together, so row-group statistics let each scan skip the others' files.
            batches = dataset.to_batches(filter=pc.field("shard") == shard)
            rows += sink.write_shard(shard, (to_embedded(b) for b in batches if b.num_rows))
    expected = section.get("stats", {}).get("rows")
    if expected is not None and rows != expected:
        raise ConfigError(f"imported {rows:,} rows but the card says {expected:,}: the download is incomplete")
    say(f"imported {rows:,} rows ({len(shards):,} shards) from {repo_or_folder} into table {name!r} of {db}; "
        f"queries will be embedded with {query_model}")
    return {"table": name, "rows": rows, "meta": meta}
