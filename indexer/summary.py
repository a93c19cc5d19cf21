"""The run summary: counts, tokens, throughput, time per stage, and every skipped record with its reason."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from indexer.types import BadRecord


@dataclass
class Counts:
    """What shard jobs produced; a run's summary adds up its shards'."""

    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    embedded_chunks: int = 0
    embedded_tokens: int = 0
    reused_chunks: int = 0
    source_reads: int = 0  # shards read from the source (re-embeds read none)
    chunked_documents: int = 0  # documents cut into chunks (re-embeds cut none)


COUNTS = [f.name for f in fields(Counts)]


@dataclass
class ShardResult(Counts):
    """What one shard job produced (returned by a worker to the process that writes the sinks)."""

    shard: str = ""
    bad: list[BadRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    precision: str = ""


@dataclass
class RunSummary(Counts):
    kind: str = "build"
    table: str = ""
    model: str = ""
    precision: str = ""
    gate: dict[str, Any] | None = None  # what the embedder measured on the corpus to choose its precision
    shards: int = 0
    shards_skipped: int = 0  # already done with the same input, settings and model
    shards_removed: int = 0  # gone from the source since the last run; their rows were removed
    rows_written: int = 0
    temporaries_removed: int = 0  # temporary files a killed run left in the work directory
    bad: list[BadRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    started: float = field(default_factory=time.time)
    wall_seconds: float = 0.0
    error: str | None = None

    def add(self, r: ShardResult) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(r, name))
        self.bad.extend(r.bad)
        for stage, s in r.seconds.items():
            self.seconds[stage] += s
        self.precision = self.precision or r.precision

    def finish(self) -> "RunSummary":
        self.wall_seconds = time.time() - self.started
        return self

    @property
    def embed_tokens_per_second(self) -> float:
        s = self.seconds.get("embed", 0.0)
        return self.embedded_tokens / s if s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it cannot copy the defaultdict of stage times
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["bad"] = [asdict(b) for b in self.bad]
        d["seconds"] = dict(self.seconds)
        d["embed_tokens_per_second"] = round(self.embed_tokens_per_second, 1)
        return d

    def render(self, max_bad: int = 50) -> str:
        lines = [
            f"{self.kind} into table {self.table!r} with {self.model} ({self.precision or 'n/a'})",
            f"  shards     {self.shards:,} ({self.shards_skipped:,} already done, skipped"
            + (f"; {self.shards_removed:,} gone from the source, removed" if self.shards_removed else "") + ")",
            f"  documents  {self.documents:,}   chunks {self.chunks:,}   tokens {self.tokens:,}",
            f"  embedded   {self.embedded_chunks:,} chunks, {self.embedded_tokens:,} tokens"
            f" ({self.reused_chunks:,} unchanged chunks reused)",
            f"  rows written {self.rows_written:,}",
        ]
        if self.temporaries_removed:
            lines.append(f"  removed    {self.temporaries_removed:,} temporary file(s) left by a killed run")
        if self.gate:
            lines.insert(1, f"  precision  {self.gate.get('summary', self.gate)}")
        stages = "   ".join(f"{k} {v:.1f}s" for k, v in sorted(self.seconds.items()))
        lines.append(f"  time       {self.wall_seconds:.1f}s wall   {stages}")
        if self.embedded_tokens:
            lines.append(f"  speed      {self.embed_tokens_per_second:,.0f} tokens/s embedding")
        if self.bad:
            lines.append(f"  skipped    {len(self.bad):,} bad record(s):")
            lines.extend(f"    - {b}" for b in self.bad[:max_bad])
            if len(self.bad) > max_bad:
                lines.append(f"    … and {len(self.bad) - max_bad:,} more (see --summary-json)")
        if self.error:
            lines.append(f"  FAILED: {self.error}")
        return "\n".join(lines)
