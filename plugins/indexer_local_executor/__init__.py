"""The default executor: runs shard jobs one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from indexer.components import Executor
from indexer.hookspecs import hookimpl


class LocalExecutor(Executor):
    """Runs every job in this process, in order. The embedder stays loaded between shards."""

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        for job in jobs:
            yield fn(job)


@hookimpl(trylast=True)
def register_executors(register):
    register("local", LocalExecutor)
