"""Executors on this machine: ``local`` runs shard jobs one after another in this process; ``processes`` runs
them in a pool of worker processes, one shard per worker at a time, so chunking (and CPU embedding) uses every
core."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from indexer.components import Executor, shard_failure, usable_cores
from indexer.hookspecs import hookimpl
from indexer.options import NoOptions


class LocalExecutor(Executor):
    """Runs every job in this process, in order. The embedder stays loaded between shards."""

    name = "local"

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        for job in jobs:
            yield fn(job)


@dataclass(frozen=True)
class ProcessOptions(NoOptions):
    hint = "set the number of processes with --workers"


class ProcessExecutor(Executor):
    """Runs jobs in worker processes (``spawn``), yielding results as they complete.

    Each worker gets its own share of the cores (``cores / workers``, pinned where the OS allows), so torch's
    and the tokenizer's thread pools do not fight over the same cores; the components a worker loads for its
    first shard stay loaded for the next (the pipeline caches them per process). The pool lives as long as the
    executor, so repeated ``map`` calls reuse warm workers.

    At most one job per worker is handed to the pool at a time, topped up as results come in, so waiting costs
    the same for 10 shards as for 50,000. When a job fails, no further jobs are started, the jobs already running
    are finished and their results yielded, and then the failure is raised: everything that finished stays done,
    and a rerun redoes the rest.

    :param workers: worker processes (default: the cores this process may use).
    """

    description = "worker processes on this machine, one shard per worker at a time"
    name = "processes"
    Options = ProcessOptions

    def __init__(self, *, workers: int | None = None, **options: Any):
        super().__init__(workers=workers, **options)
        self._pool: Any = None

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
        waiting = iter(jobs)
        running: dict[Any, Any] = {}  # future -> job
        failed: tuple[Any, BaseException] | None = None
        finished = 0

        def top_up() -> None:
            while failed is None and len(running) < self.processes and (job := next(waiting, None)) is not None:
                running[pool.submit(fn, job)] = job

        try:
            top_up()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    exc = future.exception()
                    if exc is None:
                        finished += 1
                        yield future.result()
                    elif failed is None:
                        failed = (job, exc)
                top_up()
        finally:
            if running or isinstance(failed and failed[1], BrokenProcessPool):
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


@hookimpl(trylast=True)
def register_executors(register):
    register("local", LocalExecutor)
    register("processes", ProcessExecutor)
