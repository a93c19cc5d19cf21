"""The ``hub`` sink: any build can end in a published dataset (``--sink lancedb --sink hub``).

Each shard's rows are staged as one parquet file under ``<work dir>/hub/<table>/shards/`` (a rerun overwrites
it); ``close()`` packs the staged shards, in shard order, into the dataset folder's bounded ``data/`` files,
writes the card and uploads. Adding the sink to an index that is already built publishes all of it: completion
records name their sinks, so the core hands every shard to a sink that has not had it (vectors are reused).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from indexer.components import Sink
from indexer.types import ModelInfo

from .publish import PublishSettings, finish, write_folder


class HubSink(Sink):
    """Publishes the table as a Hugging Face dataset when the run ends. Its options (``--option hub.NAME=VALUE``)
    are :class:`indexer_hub.publish.PublishSettings`, which ``indexer publish`` takes as flags."""

    description: ClassVar[str] = "Hugging Face Hub dataset: parquet files and a dataset card, uploaded at the end"
    name = "hub"
    Options = PublishSettings

    def __init__(self, *, db: str, table: str, **options: Any):
        super().__init__(db=db, table=table, **options)
        self.settings: PublishSettings = self.options
        self._model: ModelInfo | None = None
        self._meta: dict[str, Any] | None = None

    def check(self) -> None:
        self.settings.check()

    def open(self, model: ModelInfo, meta: dict[str, Any]) -> None:
        from indexer.state import WorkDir

        _require_dense(model.kind, model.name)
        self._model = model
        self._meta = {**meta, "model": meta.get("model") or asdict(model)}
        self._work = WorkDir(meta["work_dir"])
        root = self._work.root / "hub" / self.table
        self._staging = root / "shards"
        self.folder = Path(self.settings.out) if self.settings.out else root / "dataset"

    def _staged(self, shard: str) -> Path:
        return self._staging / f"{quote(shard, safe='')}.parquet"

    def write_shard(self, shard: str, batches: Iterable[Any]) -> int:
        import pyarrow.parquet as pq

        from indexer.state import atomic_path

        from .layout import published_schema, to_published

        if self._model is None:
            raise RuntimeError("HubSink.open() must be called before write_shard()")
        path = self._staged(shard)
        rows = 0
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(tmp, published_schema(self._model.dimension)) as writer:
                for batch in _record_batches(batches):
                    writer.write_batch(to_published(batch, self._model.dimension))
                    rows += batch.num_rows
        if rows == 0:  # the shard is gone from the source, or produced nothing
            path.unlink()
        return rows

    def close(self) -> None:
        from indexer.rows import stream_parquet  # pyarrow: imported on first use

        if self._meta is None or self._model is None:
            return
        meta, self._meta = self._meta, None
        shards = self._work.done_shards(self.table)
        current = {self._staged(s) for s in shards}
        for stale in self._staging.glob("*.parquet") if self._staging.is_dir() else []:
            if stale not in current:
                stale.unlink()

        def rows() -> Iterator[Any]:
            for shard in shards:
                if self._staged(shard).exists():
                    yield from stream_parquet(self._staged(shard)).iter_batches(batch_size=4096)

        stats = write_folder(rows(), self.folder, meta=meta, table=self.table, settings=self.settings)
        finish(self.folder, stats, self.settings)


def _require_dense(kind: str, model: str) -> None:
    from indexer.errors import ConfigError

    if kind != "dense":
        raise ConfigError(f"a Hub dataset holds one vector per chunk; model {model} makes {kind} vectors, which the "
                          "hub sink does not publish")


def _record_batches(batches: Iterable[Any]) -> Iterator[Any]:
    import pyarrow as pa

    for item in batches:
        yield from (item.to_batches() if isinstance(item, pa.Table) else [item])
