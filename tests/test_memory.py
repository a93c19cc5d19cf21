"""indexer.memory against the real glibc: the arena cap holds in a fresh process, and the environment wins."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from conftest import DEMO_CORPUS

from indexer.components import usable_cores

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "malloc_info"), reason="needs glibc"
)

# Threads, all alive at once, that each allocate blocks above pymalloc's size (so through malloc) but below the
# mmap threshold: every new thread gets an arena of its own from glibc while the cap allows. Then glibc's own
# report counts the arenas.
PROGRAM = r"""
import ctypes, sys, tempfile, threading
from indexer.memory import limit_malloc_arenas

if sys.argv[1] == "limit":
    limit_malloc_arenas()
elif sys.argv[1] == "plan":  # the path every build, re-embed, worker process and container takes
    from indexer.config import BuildConfig
    from indexer.pipeline import plan_build

    plan_build(BuildConfig(source=sys.argv[3], db=sys.argv[4], sinks=[], progress=False))

n = int(sys.argv[2])
together = threading.Barrier(n)

def work():
    blocks = [bytearray(20_000) for _ in range(8)]  # the thread's first mallocs attach it to an arena
    together.wait()  # all alive at once: an exited thread's arena would be handed to the next
    del blocks

threads = [threading.Thread(target=work) for _ in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(open(report.name).read().count("<heap nr="))
"""


def arenas(mode: str, threads: int, *args: str, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode, str(threads), *args], capture_output=True, text=True,
                         env=environ, check=True)
    return int(out.stdout.strip())


def test_the_arena_cap_holds_and_the_environment_wins():
    cap = max(2, len(usable_cores()))
    threads = cap + 6  # glibc's own limit is 8 per core: without the cap, every thread gets an arena
    assert arenas("limit", threads) <= cap
    assert arenas("none", threads) > cap
    assert arenas("limit", threads, MALLOC_ARENA_MAX=str(cap + 4)) > cap  # set by the user: left alone


def test_planning_a_build_caps_the_arenas(tmp_path):
    cap = max(2, len(usable_cores()))
    assert arenas("plan", cap + 6, str(DEMO_CORPUS), str(tmp_path / "db")) <= cap
