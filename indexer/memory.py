"""Keeping a long run's resident memory to what it uses: glibc's arenas and freed heap, and Arrow's pool.

Both functions are cheap, safe to call from any process (a worker, a container) and do nothing where the C
library is not glibc.
"""

from __future__ import annotations

import os
import sys

_ARENAS_LIMITED = False
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at one per usable core (at least 2), once per process, before the run's threads
    start.

    glibc gives a thread that finds the arenas busy an arena of its own, up to 8 per core, and memory freed in an
    arena stays with it. LanceDB's index build, the tokenizer's and torch's threads each leave some behind; the cap
    takes a good part off what an index build adds, no slower (docs/benchmarks.md#figures-behind-the-code). Called
    by the CLI and by ``plan_build`` (every build, re-embed, worker process and container). A ``MALLOC_ARENA_MAX``
    set in the environment wins (glibc read it at start); not glibc: nothing to do.
    """
    global _ARENAS_LIMITED
    if _ARENAS_LIMITED or "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    _ARENAS_LIMITED = True
    from indexer.components import usable_cores

    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, max(2, len(usable_cores())))
    except (AttributeError, OSError):  # not glibc (musl)
        pass


def return_freed_memory() -> None:
    """Hand memory that has been freed back to the OS (glibc keeps it otherwise).

    Embedding on CPU allocates and frees large activations batch after batch; glibc's malloc raises its mmap
    threshold after such frees and then keeps the freed heap for reuse, so after a shard a process can sit on
    hundreds of MB it no longer uses, and whatever comes next (the next shard's writes, the sinks' index builds) is
    counted on top. Called after each shard and before the sinks close; a few ms. malloc_trim is a no-op where it is
    missing (not glibc). No garbage collection: nothing here is held by cycles, and a full collection with torch
    loaded is slow.
    """
    # Arrow's own pool (mimalloc or jemalloc) keeps what the shard's Parquet reads and the sinks' writes freed,
    # out of malloc_trim's reach; returning it lowers a build's peak (docs/benchmarks.md#figures-behind-the-code).
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc (macOS, musl, Windows)
        pass
