"""The ``modal`` executor: each shard job runs in a Modal container against a work directory on a Volume, and its
files are copied back into the local work directory before the result is yielded.

So the core's contract holds unchanged: the pipeline's own ``prepare_shard`` does the shard's work (in the
container), the process that runs the build writes every sink and every completion record, and a rerun skips
finished shards. The Volume's work directory keeps chunk and vector files between runs, so a shard that finished
remotely but was never recorded locally (a killed build) is not embedded again: its vectors are reused by content
hash.

Inputs: a local file, folder or glob is uploaded to the Volume once (unchanged files are not sent again) and each
container links every file back at its original path, so the source plans the same shards, keys and chunk set
there as here. Any other source (a Hub dataset) is read by the containers themselves, through the Hugging Face
cache on the Volume; one container lists it first, and the run stops if it sees other shards than this machine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from indexer.components import Executor
from indexer.errors import ConfigError
from indexer.options import NoOptions

from indexer_modal import worker
from indexer_modal.remote import call_local, modal_errors
from indexer_modal.settings import ModalSettings

WORK = "work"  # the work directory's folder on the Volume
INPUTS = "inputs"  # staged input files and their link tables
REMOTE_EMBEDDERS = ("modal-tei", "tei")  # what the CPU image can plan a shard with (no torch, no local models)


@dataclass(frozen=True)
class ModalExecutorOptions(NoOptions):
    hint = "it is configured by INDEXER_MODAL_* variables (indexer plugins --options lists them), see docs/modal.md"


class ModalExecutor(Executor):
    """Runs shard jobs in the deployed Modal app's ``run_shard`` containers (``modal deploy -m indexer_modal.app``).

    :param workers: most chunking containers at once for this run (default: the app's ``cpu_containers``).
    """

    description = "Modal containers: one shard per CPU container; with --embedder modal-tei, TEI on Modal GPUs"
    name = "modal"
    Options = ModalExecutorOptions
    environment = ModalSettings

    def check(self) -> None:
        super().check()
        try:  # the app module imports modal, also when its bodies run here (INDEXER_MODAL_RUN=local)
            import modal  # noqa: F401
        except ImportError:
            raise ConfigError("the modal executor needs the modal package: pip install 'indexer[modal]'") from None

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        from indexer.pipeline import ShardJob, plan_for_job
        from indexer.components import shard_failure

        jobs = list(jobs)
        if not jobs:
            return
        settings = ModalSettings.from_env()
        config = jobs[0].config
        if config.embedder not in REMOTE_EMBEDDERS:
            raise ConfigError(
                f"the {config.embedder} embedder cannot run in the Modal containers (their image holds no torch and "
                "no model files from this machine): build with --embedder modal-tei (TEI on Modal GPUs) or "
                "--embedder tei --model URL (a TEI server the containers can reach)"
            )
        local = settings.run == "local"
        volume: _Volume = _Folder(settings.volume_root()) if local else _ModalVolume(settings)
        runner: _Runner = _LocalRunner() if local else _ModalRunner(settings, self.workers)
        inputs = local_input_files(config.source) if config.source else []
        remote = dataclasses.replace(
            config, work_dir=str(settings.volume_root() / WORK), sinks=[], executor="local", workers=None,
            progress=False,
            source=os.path.abspath(os.path.expanduser(config.source)) if inputs else config.source,
        )
        links_file = stage_inputs(volume, inputs) if inputs else None
        if not inputs and not all(j.from_chunks for j in jobs):
            check_remote_shards(runner.describe_source(remote), [j for j in jobs if not j.from_chunks])
        remote_work = volume.listing(WORK)
        remote_jobs, expected = [], []
        for job in jobs:
            plan = plan_for_job(job)
            stage_work(volume, remote_work, plan, job)
            remote_jobs.append(ShardJob(remote, job.shard, job.from_chunks))
            expected.append({"chunkset": plan.chunkset, "model": plan.model_key})

        # Outcomes arrive as shards finish, in any order: a result names its shard, and so does an error raised by
        # a shard's own work (worker.run_shard marks it). An error of Modal's own (a lost container, a timeout)
        # names none; it belongs to whichever shards neither finished nor failed by name.
        pending = {job.shard.key: job for job in jobs}
        failed: list[tuple[Any, BaseException]] = []
        finished = 0
        for outcome in runner.run_shards(fn, remote_jobs, links_file, expected):
            if isinstance(outcome, BaseException):
                failed.append((pending.pop(getattr(outcome, worker.SHARD_ATTRIBUTE, None), None), outcome))
                continue
            job = pending.pop(outcome.shard)
            fetch_results(volume, plan_for_job(job), job)
            finished += 1
            yield outcome
        if failed:
            job, exc = next(((j, e) for j, e in failed if j is not None), failed[0])
            unnamed = sorted(pending)  # neither finished nor failed by name
            if job is None and len(unnamed) == 1:
                job = pending[unnamed[0]]
            shard = None if job else "one of " + ", ".join(unnamed[:5]) + (", ..." if len(unnamed) > 5 else "")
            raise shard_failure(job, exc, finished, len(jobs), "a Modal container", shard=shard)


# -- inputs and results ------------------------------------------------------------------------------------------


def local_input_files(source: str) -> list[Path]:
    """The files a local source reads (a file, every non-hidden file of a folder, a glob's matches); empty when
    ``source`` names nothing on this machine (a Hub dataset)."""
    from indexer_sources.layout import list_files

    return [f.path for f in list_files(source, ("",))]


def stage_inputs(volume: "_Volume", files: list[Path]) -> str:
    """Upload the files the Volume lacks; return the Volume path of the table original path → staged copy.

    A staged copy is named by its original path, size and modification time, so an edited file is sent again
    and an unchanged one never is."""
    from indexer.state import short_hash

    existing = volume.listing(INPUTS)
    links, todo = {}, []
    for f in files:
        st = f.stat()
        rel = f"{INPUTS}/{short_hash(str(f), st.st_size, st.st_mtime_ns)}/{f.name}"
        links[str(f)] = rel
        if rel not in existing:
            todo.append((f, rel))
    text = json.dumps(links, sort_keys=True)
    links_rel = f"{INPUTS}/links-{short_hash(text)}.json"
    with tempfile.TemporaryDirectory() as tmp:
        if links_rel not in existing:
            table = Path(tmp) / "links.json"
            table.write_text(text)
            todo.append((table, links_rel))
        volume.upload(todo)
    return links_rel


def check_remote_shards(remote: list[tuple[str, str]], jobs: list[Any]) -> None:
    """Stop before any shard runs when the containers see the source differently from this machine."""
    theirs = dict(remote)
    differ = [j.shard.key for j in jobs if theirs.get(j.shard.key) != j.shard.fingerprint]
    if differ:
        raise ConfigError(
            f"the Modal containers see {len(differ)} shard(s) of the source differently from this machine "
            f"(missing or another version), e.g. {', '.join(differ[:3])}; pin the input (for a Hub dataset: "
            "--option source.revision=COMMIT) and run again"
        )


def _rel(plan: Any, path: Path) -> str:
    return f"{WORK}/{path.relative_to(plan.work.root).as_posix()}"


def stage_work(volume: "_Volume", remote: set[str], plan: Any, job: Any) -> None:
    """Send what a shard job reads from the work directory and the Volume lacks: the stored chunks of a re-embed,
    and the shard's previous vectors (reused for unchanged chunks)."""
    work, key = plan.work, job.shard.key
    wanted = [work.vector_file(plan.model_key, plan.chunkset, key)]
    if job.from_chunks:
        wanted += [work.chunk_file(plan.chunkset, key), work.chunk_record_file(plan.chunkset, key),
                   work.chunkset_info_file(plan.chunkset)]
    todo = [(p, _rel(plan, p)) for p in wanted if p.exists() and _rel(plan, p) not in remote]
    volume.upload(todo)
    remote.update(rel for _, rel in todo)


def fetch_results(volume: "_Volume", plan: Any, job: Any) -> None:
    """Copy a finished shard's files from the Volume into the local work directory (each whole or not at all)."""
    from indexer.state import atomic_path

    work, key = plan.work, job.shard.key
    files = [work.vector_file(plan.model_key, plan.chunkset, key)]
    if not job.from_chunks:
        files += [work.chunk_file(plan.chunkset, key), work.chunk_record_file(plan.chunkset, key)]
    for path in files:
        with atomic_path(path) as tmp:
            volume.download(_rel(plan, path), tmp)


# -- the Volume, as this machine sees it -------------------------------------------------------------------------


class _Volume:
    def listing(self, folder: str) -> set[str]:
        """Paths (relative to the Volume's root) of every file under ``folder``."""
        raise NotImplementedError

    def upload(self, files: list[tuple[Path, str]]) -> None:
        raise NotImplementedError

    def download(self, rel: str, dest: Path) -> None:
        raise NotImplementedError


class _Folder(_Volume):
    """A local folder standing in for the Volume (``INDEXER_MODAL_RUN=local``)."""

    def __init__(self, root: Path):
        self.root = root

    def listing(self, folder: str) -> set[str]:
        base = self.root / folder
        return {p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()} if base.is_dir() else set()

    def upload(self, files: list[tuple[Path, str]]) -> None:
        from indexer.state import atomic_path

        for src, rel in files:
            with atomic_path(self.root / rel) as tmp:
                shutil.copyfile(src, tmp)

    def download(self, rel: str, dest: Path) -> None:
        shutil.copyfile(self.root / rel, dest)


class _ModalVolume(_Volume):
    def __init__(self, settings: ModalSettings):
        import modal

        self.settings = settings
        self.volume = modal.Volume.from_name(settings.volume, create_if_missing=True)

    def listing(self, folder: str) -> set[str]:
        import modal.exception
        from modal.volume import FileEntryType

        with modal_errors(self.settings.app_name):
            try:
                entries = self.volume.listdir(folder, recursive=True)
            except (FileNotFoundError, modal.exception.NotFoundError):  # nothing there yet
                return set()
        return {e.path.lstrip("/") for e in entries if e.type == FileEntryType.FILE}

    def upload(self, files: list[tuple[Path, str]]) -> None:
        if not files:
            return
        with modal_errors(self.settings.app_name), self.volume.batch_upload(force=True) as batch:
            for src, rel in files:
                batch.put_file(str(src), "/" + rel)

    def download(self, rel: str, dest: Path) -> None:
        with modal_errors(self.settings.app_name), open(dest, "wb") as f:
            self.volume.read_file_into_fileobj(rel, f)


# -- running the app's functions ---------------------------------------------------------------------------------


class _Runner:
    def run_shards(self, fn: Callable[[Any], Any], jobs: list[Any], links_file: str | None,
                   expected: list[dict[str, str]]) -> Iterator[Any]:
        """Each job's result or exception, as the jobs finish (in any order)."""
        raise NotImplementedError

    def describe_source(self, config: Any) -> list[tuple[str, str]]:
        raise NotImplementedError


class _ModalRunner(_Runner):
    def __init__(self, settings: ModalSettings, workers: int | None):
        import modal

        self.app_name = settings.app_name
        self.run_shard = modal.Function.from_name(settings.app_name, "run_shard")
        if workers:
            self.run_shard = self.run_shard.with_options(max_containers=workers)
        self.describe = modal.Function.from_name(settings.app_name, "describe_source")

    def run_shards(self, fn, jobs, links_file, expected):
        n = len(jobs)
        # As they finish: a shard that finished is fetched and written while earlier ones still run. Exceptions
        # come back as values, so that one failed shard does not stop the others.
        with modal_errors(self.app_name):
            yield from self.run_shard.map([fn] * n, jobs, [links_file] * n, expected, order_outputs=False,
                                          return_exceptions=True)

    def describe_source(self, config):
        with modal_errors(self.app_name):
            return self.describe.remote(config)


class _LocalRunner(_Runner):
    """The functions' bodies in this process, through Modal's ``.local()``."""

    def __init__(self):
        from indexer_modal import app

        self.app = app

    def run_shards(self, fn, jobs, links_file, expected):
        for job, exp in zip(jobs, expected):
            try:
                outcome = call_local(self.app.run_shard, fn, job, links_file, exp)
            except Exception as exc:  # handed back, as return_exceptions=True does on Modal
                outcome = exc
            yield outcome

    def describe_source(self, config):
        return call_local(self.app.describe_source, config)
