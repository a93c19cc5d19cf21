"""The two moving parts behind the HTTP layer, free of it: the index a server follows (:class:`Follower`) and the
micro-batcher that turns concurrent requests into one ``Index.search`` call (:class:`Batcher`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.components import Hit
from indexer.log import get_logger
from indexer.retrieval import Index, SearchSettings, open_index, table_settings
from indexer.state import WorkDir

log = get_logger("serve")

# A query embedded and searched once the index is open, so the first request does not pay for loading the model
# (lazily, on first use) and a newly promoted table is warm before it takes traffic.
WARM_UP_QUERY = "warm up"


def open_warm(db: str, table: str | None, work_dir: str | None, serving: Index | None = None) -> Index:
    """``table`` opened and searched once. A table embedded as ``serving``'s (same embedder record, same weights)
    shares its embedder, so a switch between them loads no second copy of the model."""
    index = open_index(db, table, work_dir=work_dir)
    if serving is not None and (index.meta["embedder"], index.meta["model"]["fingerprint"]) == (
            serving.meta["embedder"], serving.meta["model"]["fingerprint"]):
        index = dataclasses.replace(index, embedder=serving.embedder)
    index.search([WARM_UP_QUERY], k=1, settings=SearchSettings(mode="dense"))
    return index


class Follower:
    """The index a server searches, kept on the table its alias points at.

    ``--table current`` (or no ``--table``, which searches the alias ``current`` when it exists) follows the alias:
    when ``reembed --promote-if-better`` or ``alias set`` moves it, the new table is opened and warmed beside the
    old one, then swapped in with one assignment. A request holds the :class:`Index` it started with, so requests
    in flight finish on the old table (which stays until ``indexer prune`` drops it) and none fails. Settings that
    ``tune-search`` records for the table are picked up the same way. A table named outright is not followed.
    """

    def __init__(self, db: str, table: str | None = None, work_dir: str | None = None):
        self.db = db
        self.work = WorkDir(work_dir or Path(db) / "_indexer")
        self.work_dir = work_dir
        aliases = self.work.aliases()
        # which alias to follow: the one named, or "current" when no table is named (as resolve_table picks it)
        self.alias = table if table in aliases else ("current" if table is None else None)
        self.index = open_warm(db, table, work_dir)
        self.switched_at: float | None = None
        self._seen = self._look()

    def _look(self) -> tuple[str, int | None]:
        """The table to serve now and its recorded settings' modification time."""
        table = self.work.aliases().get(self.alias, self.index.table) if self.alias else self.index.table
        path = self.work.search_settings_file(table)
        return table, path.stat().st_mtime_ns if path.exists() else None

    def refresh(self) -> bool:
        """Swap in the table the alias points at now, or its new settings; True when something changed.
        Blocking (opening a table loads its model): run it in a worker thread."""
        seen = self._look()
        if seen == self._seen:
            return False
        table = seen[0]
        if table != self.index.table:
            index = open_warm(self.db, table, self.work_dir, serving=self.index)
            log.info("alias %s moved: now serving table %s (was %s)", self.alias, table, self.index.table)
        else:
            settings, origin = table_settings(self.work, table, self.index.sink)
            index = dataclasses.replace(self.index, settings=settings, origin=origin)
            log.info("table %s: search settings now %s (%s)", table, settings.describe(), origin)
        self.index, self._seen, self.switched_at = index, seen, time.time()
        return True

    async def follow(self, every_s: float) -> None:
        """Check for a moved alias every ``every_s`` seconds, forever; a failure is logged and the old table kept."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # a half-written table or a missing model must not stop the server
                log.exception("could not switch tables; still serving %s", self.index.table)


@dataclass(frozen=True)
class Ranking:
    """What must be equal for requests to share one ``Index.search`` call."""

    k: int
    by_doc: bool
    settings: SearchSettings
    filter: str | None


class Batcher:
    """Dynamic batching, as Text Embeddings Inference does it: requests queue; a single worker takes everything
    queued (after waiting ``wait_s`` for company when it was idle), groups it by :class:`Ranking` and runs one
    ``Index.search`` per group in a worker thread, so the queries of a group are embedded in one model call and
    searched in one LanceDB call. Under load the queue fills while the worker is busy, and batches grow with it.

    The event loop never blocks on a search; one search runs at a time, which keeps torch's threads on the cores
    instead of fighting over them.
    """

    def __init__(self, max_batch: int = 64, wait_s: float = 0.002):
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.batches = 0
        self.queries = 0
        self._queue: list[tuple[Index, Ranking, str, asyncio.Future]] = []
        self._wake = asyncio.Event()

    async def search(self, index: Index, ranking: Ranking, queries: list[str]) -> list[list[Hit]]:
        """Each query's hits, searched with whatever else is queued under the same ranking."""
        loop = asyncio.get_running_loop()
        futures = []
        for q in queries:
            futures.append(loop.create_future())
            self._queue.append((index, ranking, q, futures[-1]))
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def run(self) -> None:
        """The worker, forever. One group's failure (a filter the table rejects) fails only that group's requests."""
        while True:
            await self._wake.wait()
            if self.wait_s:
                await asyncio.sleep(self.wait_s)
            self._wake.clear()
            queued, self._queue = self._queue, []
            groups: dict[tuple[int, Ranking], list[tuple[Index, str, asyncio.Future]]] = {}
            for index, ranking, query, future in queued:
                if not future.done():  # a client that went away
                    groups.setdefault((id(index), ranking), []).append((index, query, future))
            for (_, ranking), items in groups.items():
                for start in range(0, len(items), self.max_batch):
                    await self._search(ranking, items[start : start + self.max_batch])

    async def _search(self, ranking: Ranking, items: list[tuple[Index, str, asyncio.Future]]) -> None:
        index = items[0][0]
        try:
            ranked: Any = await asyncio.to_thread(index.search, [q for _, q, _ in items], ranking.k, ranking.by_doc,
                                                  ranking.filter, ranking.settings)
        except Exception as exc:
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.queries += len(items)
        for (_, _, future), hits in zip(items, ranked):
            if not future.done():
                future.set_result(hits)
