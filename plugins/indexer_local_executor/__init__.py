"""Executors on this machine: ``local`` runs shard jobs one after another in this process; ``processes`` runs
them in a pool of worker processes, one shard per worker at a time, so chunking (and CPU embedding) uses every
core."""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from indexer.components import Executor
from indexer.errors import ConfigError, IndexerError
from indexer.hookspecs import hookimpl


class LocalExecutor(Executor):
    """Runs every job in this process, in order. The embedder stays loaded between shards."""

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        for job in jobs:
            yield fn(job)


class ProcessExecutor(Executor):
    """Runs jobs in worker processes (``spawn``), yielding results as they complete.

    Each worker gets its own share of the cores (``cores / workers``, pinned where the OS allows), so torch's
    and the tokenizer's thread pools do not fight over the same cores; the components a worker loads for its
    first shard stay loaded for the next (the pipeline caches them per process). The pool lives as long as the
    executor, so repeated ``map`` calls reuse warm workers.

    When a job fails, no further jobs are started, the jobs already running are finished and their results
    yielded, and then the failure is raised: everything that finished stays done, and a rerun redoes the rest.

    :param workers: worker processes (default: the cores this process may use).
    """

    description = "worker processes on this machine, one shard per worker at a time"

    def __init__(self, *, workers: int | None = None, **options: Any):
        super().__init__(workers=workers, **options)
        self._pool: Any = None

    def check(self) -> None:
        if self.options:
            raise ConfigError(f"the processes executor takes no options (got {', '.join(sorted(self.options))}); "
                              "set the number of processes with --workers")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(f"--workers must be at least 1 (got {self.workers!r})")

    @property
    def processes(self) -> int:
        return self.workers or len(usable_cores())

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        jobs = list(jobs)
        if not jobs:
            return
        pool = self._start()
        futures = {pool.submit(fn, job): job for job in jobs}
        pending = set(futures)
        failed: tuple[Any, BaseException] | None = None
        finished = 0
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.cancelled():
                        continue
                    exc = future.exception()
                    if exc is None:
                        finished += 1
                        yield future.result()
                    elif failed is None:
                        failed = (futures[future], exc)
                        for other in pending:
                            other.cancel()  # only jobs no worker has taken yet
        finally:
            if pending or isinstance(failed and failed[1], BrokenProcessPool):
                # abandoned (the caller stopped reading) or broken: start afresh next time
                self.close()
        if failed is not None:
            raise shard_failure(failed[0], failed[1], finished, len(jobs), "a worker process")

    def _start(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")
            n = self.processes
            self._pool = ProcessPoolExecutor(
                max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(ctx.Value("i", 0), n),
            )
            self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=True, cancel_futures=True)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes, once the jobs they are running are done; jobs not started are dropped."""
        if self._pool is not None:
            self._finalizer.detach()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ProcessExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return list(range(os.cpu_count() or 1))


def _init_worker(counter: Any, workers: int) -> None:
    """Give this worker its share of the cores before any numeric library starts its thread pool."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = usable_cores()
    share = len(cores) // workers
    if share >= 1 and hasattr(os, "sched_setaffinity"):
        # Pinning makes every library that sizes its pool from the affinity mask (torch via the local embedder,
        # the tokenizer's rayon pool) see just this worker's cores.
        mine = cores[(index % workers) * share : (index % workers + 1) * share]
        os.sched_setaffinity(0, mine)
    threads = str(max(1, share))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, share))


def shard_failure(job: Any, exc: BaseException, finished: int, total: int, where: str) -> BaseException:
    """The error to raise when a job failed elsewhere: which shard, why, and what is safe (chained to the cause,
    whose remote traceback concurrent.futures and Modal attach)."""
    from concurrent.futures.process import BrokenProcessPool

    shard = getattr(getattr(job, "shard", None), "key", None) or repr(job)[:80]
    if isinstance(exc, BrokenProcessPool):
        why = "the worker process died (killed by the OS, out of memory?)"
    else:
        why = f"{type(exc).__name__}: {exc}"
    message = (f"shard {shard} failed in {where}: {why}. {finished} of {total} shard(s) finished in this run and are "
               "recorded; run the same command again to redo only the rest")
    cls = type(exc) if isinstance(exc, IndexerError) else RuntimeError
    try:
        error = cls(message)
    except TypeError:  # an IndexerError subclass with its own constructor
        error = IndexerError(message)
    error.__cause__ = exc
    return error


@hookimpl(trylast=True)
def register_executors(register):
    register("local", LocalExecutor)
    register("processes", ProcessExecutor)
