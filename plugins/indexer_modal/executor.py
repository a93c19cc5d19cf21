"""The ``modal`` executor: schedules shard jobs on the deployed app's ``run_shard`` containers, and provides the
work directory they share: a folder of a Modal Volume (:meth:`ModalExecutor.work_location`).

The pipeline does the rest, as for any executor whose workers keep the work directory elsewhere
(:func:`indexer.pipeline.run_jobs`): it plans the jobs against the Volume's work directory, sends each the files it
reads there and fetches what it wrote, and then writes every sink and completion record on this machine, so a
rerun skips finished shards. The Volume's work directory keeps chunk and vector files between runs, so a shard
that finished remotely but was never recorded locally (a killed build) is not embedded again: its vectors are
reused by content hash.

Inputs are Modal's own affair, and stay here: a local file, folder or glob is uploaded to the Volume once
(unchanged files are not sent again) and each container links every file back at its original path, so the
source plans the same shards, keys and chunk set there as here. Any other source (a Hub dataset) is read by the
containers themselves, through the Hugging Face cache on the Volume; one container lists it first, and the run
stops if it sees other shards than this machine.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.components import Executor
from indexer.errors import ConfigError
from indexer.options import NoOptions

from indexer_modal import worker
from indexer_modal.remote import call_local, modal_errors
from indexer_modal.settings import ModalSettings

if TYPE_CHECKING:  # indexer.state imports pyarrow; this module is imported when the CLI starts
    from indexer.state import Location

WORK = "work"  # the work directory's folder on the Volume
INPUTS = "inputs"  # staged input files and their link tables


@dataclass(frozen=True)
class ModalExecutorOptions(NoOptions):
    hint = "it is configured by INDEXER_MODAL_* variables (indexer plugins --options lists them), see docs/modal.md"


class ModalExecutor(Executor):
    """Runs shard jobs in the deployed Modal app's ``run_shard`` containers (``modal deploy -m indexer_modal.app``).

    :param workers: most chunking containers at once for this run (default: the app's ``cpu_containers``).
    """

    description = "Modal containers: one shard per CPU container; with --embedder modal-tei, TEI on Modal GPUs"
    remote = True  # the containers' image holds no torch and none of this machine's files
    name = "modal"
    Options = ModalExecutorOptions
    environment = ModalSettings

    def check(self) -> None:
        super().check()
        try:  # the app module imports modal, also when its bodies run here (INDEXER_MODAL_RUN=local)
            import modal  # noqa: F401
        except ImportError:
            raise ConfigError("the modal executor needs the modal package: pip install 'indexer[modal]'") from None

    def work_location(self) -> Location:
        """The work directory on the Volume (a local folder standing in for it with ``INDEXER_MODAL_RUN=local``)."""
        from indexer_modal.volume import volume

        return volume(ModalSettings.from_env(), WORK)

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        from indexer.components import shard_failure
        from indexer_modal.volume import volume

        jobs = list(jobs)
        if not jobs:
            return
        settings = ModalSettings.from_env()
        runner: _Runner = _LocalRunner() if settings.run == "local" else _ModalRunner(settings, self.workers)
        config = jobs[0].config  # as the containers plan the jobs; read for its input, never changed
        inputs = local_input_files(config.source) if config.source else []
        links_file = stage_inputs(volume(settings), inputs) if inputs else None
        if not inputs and not all(j.from_chunks for j in jobs):
            check_remote_shards(runner.describe_source(config), [j for j in jobs if not j.from_chunks])

        # Outcomes arrive as shards finish, in any order: a result names its shard, and so does an error raised by
        # a shard's own work (worker.run_shard marks it). An error of Modal's own (a lost container, a timeout)
        # names none; it belongs to whichever shards neither finished nor failed by name.
        pending = {job.shard.key: job for job in jobs}
        failed: list[tuple[Any, BaseException]] = []
        finished = 0
        for outcome in runner.run_shards(fn, jobs, links_file):
            if isinstance(outcome, BaseException):
                failed.append((pending.pop(getattr(outcome, worker.SHARD_ATTRIBUTE, None), None), outcome))
                continue
            pending.pop(outcome.shard)
            finished += 1
            yield outcome
        if failed:
            job, exc = next(((j, e) for j, e in failed if j is not None), failed[0])
            unnamed = sorted(pending)  # neither finished nor failed by name
            if job is None and len(unnamed) == 1:
                job = pending[unnamed[0]]
            shard = None if job else "one of " + ", ".join(unnamed[:5]) + (", ..." if len(unnamed) > 5 else "")
            raise shard_failure(job, exc, finished, len(jobs), "a Modal container", shard=shard)


# -- inputs ------------------------------------------------------------------------------------------------------


def local_input_files(source: str) -> list[Path]:
    """The files a local source reads (a file, every non-hidden file of a folder, a glob's matches); empty when
    ``source`` names nothing on this machine (a Hub dataset)."""
    from indexer_sources.layout import list_files

    return [f.path for f in list_files(source, ("",))]


def stage_inputs(volume: Location, files: list[Path]) -> str:
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


# -- running the app's functions ---------------------------------------------------------------------------------


class _Runner:
    def run_shards(self, fn: Callable[[Any], Any], jobs: list[Any], links_file: str | None) -> Iterator[Any]:
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

    def run_shards(self, fn, jobs, links_file):
        n = len(jobs)
        # As they finish: a shard that finished is fetched and written while earlier ones still run. Exceptions
        # come back as values, so that one failed shard does not stop the others.
        with modal_errors(self.app_name):
            yield from self.run_shard.map([fn] * n, jobs, [links_file] * n, order_outputs=False,
                                          return_exceptions=True)

    def describe_source(self, config):
        with modal_errors(self.app_name):
            return self.describe.remote(config)


class _LocalRunner(_Runner):
    """The functions' bodies in this process, through Modal's ``.local()``."""

    def __init__(self):
        from indexer_modal import app

        self.app = app

    def run_shards(self, fn, jobs, links_file):
        for job in jobs:
            try:
                outcome = call_local(self.app.run_shard, fn, job, links_file)
            except Exception as exc:  # handed back, as return_exceptions=True does on Modal
                outcome = exc
            yield outcome

    def describe_source(self, config):
        return call_local(self.app.describe_source, config)
