"""Searching an index: open a table with the embedder that made it, rank its chunks by vector (``dense``), by
full text (``text``, BM25) or both fused (``hybrid``, :mod:`indexer.fusion`), filter, aggregate to documents.

The table's stored metadata names its embedder and model, so a search needs only the database and the table
(or an alias such as ``current``, or nothing when the database holds one table). How it searches — the
:class:`SearchSettings` — comes from the caller, else from what ``indexer tune-search`` recorded for the table on
its feedback, else from :data:`DEFAULT_SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer import fusion
from indexer.components import Embedder, Hit, Sink
from indexer.config import DEFAULT_DB
from indexer.errors import ConfigError
from indexer.plugins import Host, get_host
from indexer.state import WorkDir

MODES = ("dense", "text", "hybrid")
FUSE_LEVELS = ("doc", "chunk")


@dataclass(frozen=True)
class SearchSettings:
    """How a table is searched. ``fusion``, ``rrf_k``, ``text_weight`` and ``fuse`` matter in ``hybrid`` mode."""

    mode: str = "dense"
    fusion: str = "convex"  # "rrf" or "convex" (indexer.fusion)
    rrf_k: int = 60
    text_weight: float = 0.5  # the text ranking's weight against the dense ranking's 1
    fuse: str = "doc"  # with by_doc: aggregate chunks to documents before fusing ("doc") or after ("chunk")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"search mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.fusion not in fusion.FUSIONS:
            raise ConfigError(f"fusion {self.fusion!r} is not one of {', '.join(fusion.FUSIONS)}")
        if not isinstance(self.rrf_k, int) or self.rrf_k < 1:
            raise ConfigError(f"rrf_k must be a whole number of at least 1 (got {self.rrf_k!r})")
        if not 0 <= self.text_weight <= 100:
            raise ConfigError(f"text_weight must be between 0 and 100 (got {self.text_weight!r})")
        if self.fuse not in FUSE_LEVELS:
            raise ConfigError(f"fuse must be one of {', '.join(FUSE_LEVELS)} (got {self.fuse!r})")

    def with_(self, **changes: Any) -> "SearchSettings":
        """These settings with the given (non-None) fields changed."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        if self.mode != "hybrid":
            return self.mode
        extra = f", k={self.rrf_k}" if self.fusion == "rrf" else ""
        return f"hybrid ({self.fusion}{extra}, text weight {self.text_weight:g}, fused per {self.fuse})"


# For a table without recorded settings: of the settings measured on every quality set at hand, the one with the
# best mean gain over dense and the smallest loss on a set where dense wins (docs/benchmarks.md#search-modes).
DEFAULT_SETTINGS = SearchSettings(mode="hybrid")


class SearchResults(list):
    """The hits of one query (a list), and the settings that ranked them (``.settings``) and where those came
    from (``.origin``: "given", "recorded" by tune-search, or "default")."""

    def __init__(self, hits: list[Hit], settings: SearchSettings, origin: str):
        super().__init__(hits)
        self.settings = settings
        self.origin = origin


@dataclass
class Index:
    table: str
    sink: Sink
    embedder: Embedder
    meta: dict[str, Any]
    settings: SearchSettings = field(default_factory=SearchSettings)
    origin: str = "default"  # where ``settings`` came from: "recorded" (tune-search) or "default"

    def resolve(self, **given: Any) -> tuple[SearchSettings, str]:
        """The table's settings with the caller's (non-None) choices applied, and where they came from."""
        changes = {k: v for k, v in given.items() if v is not None}
        settings = self.settings.with_(**changes)
        if settings.mode not in self.sink.search_modes:
            raise ConfigError(f"sink {self.meta.get('sink', 'lancedb')!r} cannot search in {settings.mode} mode; it "
                              f"serves {', '.join(self.sink.search_modes)}" + (
                                  "" if settings.mode == "dense" else
                                  " (text and hybrid modes need a full-text index: the lancedb sink keeps one)"))
        return settings, "given" if changes else self.origin

    def search(self, queries: list[str], k: int = 10, by_doc: bool = False, filter: str | None = None,
               settings: SearchSettings | None = None) -> list[list[Hit]]:
        """The top ``k`` chunks (documents with ``by_doc``) for each query, ranked by ``settings`` (default: the
        table's)."""
        settings = settings or self.resolve()[0]
        if filter:
            self.sink.check_filter(filter)
        dense, text = self.candidates(queries, candidate_depth(k, by_doc, settings.mode), settings.mode, filter)
        return [rank(d, t, k, by_doc, settings) for d, t in zip(dense, text)]

    def candidates(self, queries: list[str], depth: int, mode: str, filter: str | None = None
                   ) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """Each query's dense and text rankings, ``depth`` chunks deep (empty where ``mode`` needs none)."""
        none: list[list[Hit]] = [[] for _ in queries]
        dense = self.sink.search_queries(queries, self.embedder, depth, filter=filter) if mode != "text" else none
        text = self.sink.search_texts(queries, depth, filter=filter) if mode != "dense" else none
        return dense, text


def candidate_depth(k: int, by_doc: bool, mode: str) -> int:
    """Chunks to fetch per ranking: several chunks of one document may crowd the top k, and a fusion needs
    candidates below each list's top k to find those both lists rank fairly well."""
    return max(k * 5, k + 50) if by_doc or mode == "hybrid" else k


def rank(dense: list[Hit], text: list[Hit], k: int, by_doc: bool, settings: SearchSettings) -> list[Hit]:
    """One query's final top ``k`` from its candidate rankings."""
    if settings.mode != "hybrid":
        hits = dense if settings.mode == "dense" else text
        return fusion.best_per_doc(hits)[:k] if by_doc else hits[:k]
    fuse = fusion.FUSIONS[settings.fusion]
    options: dict[str, Any] = {"text_weight": settings.text_weight}
    if settings.fusion == "rrf":
        options["rrf_k"] = settings.rrf_k
    if not by_doc:
        return fuse(dense, text, key=fusion.by_chunk, **options)[:k]
    if settings.fuse == "doc":
        return fuse(fusion.best_per_doc(dense), fusion.best_per_doc(text), key=fusion.by_doc, **options)[:k]
    return fusion.best_per_doc(fuse(dense, text, key=fusion.by_chunk, **options))[:k]


# --------------------------------------------------------------------------------------------------------------
# Settings recorded with a table (by ``indexer tune-search``)


def recorded_settings(work: WorkDir, table: str) -> dict[str, Any] | None:
    """What tune-search recorded for ``table``: ``{"settings": {...}, "metric": ..., "scores": [...], ...}``."""
    return work.search_settings(table)


def record_settings(work: WorkDir, table: str, settings: SearchSettings, **evidence: Any) -> None:
    """Make ``settings`` the way ``table`` is searched unless a caller says otherwise."""
    work.write_search_settings(table, {"settings": settings.to_dict(), "time": time.time(), **evidence})


def table_settings(work: WorkDir, table: str, sink: Sink | None = None) -> tuple[SearchSettings, str]:
    """The settings ``table`` is searched with by default, and their origin ("recorded" or "default"). Given the
    table's ``sink``, a mode it cannot serve now falls back to dense: a PLAID index, which only ranks by its own
    vectors, or a table built before full-text indexes were kept."""
    record = recorded_settings(work, table)
    settings, origin = (DEFAULT_SETTINGS, "default") if record is None else (
        SearchSettings.from_dict(record["settings"]), "recorded")
    if sink is not None and settings.mode not in sink.available_modes():
        return settings.with_(mode="dense"), "default"
    return settings, origin


def resolve_table(db: str, table: str | None, sink_name: str = "lancedb", host: Host | None = None,
                  work_dir: str | None = None) -> str:
    host = host or get_host()
    work = WorkDir(work_dir or Path(db) / "_indexer")
    aliases = work.aliases()
    if table and table in aliases:
        return aliases[table]
    if table:
        return table
    if "current" in aliases:
        return aliases["current"]
    tables = [t["table"] for t in host.component("sink", sink_name)(db=db, table="").tables()]
    if len(tables) == 1:
        return tables[0]
    if not tables:
        raise ConfigError(f"no index in {db}: build one first (indexer build SOURCE --db {db})")
    raise ConfigError(f"{db} holds several tables ({', '.join(tables)}); pick one with --table")


def open_index(db: str = DEFAULT_DB, table: str | None = None, *, sink_name: str = "lancedb",
               host: Host | None = None, model: str | None = None, work_dir: str | None = None) -> Index:
    """Open a table for searching, with the embedder recorded in it (or ``model``, which must match it)."""
    host = host or get_host()
    if not Path(db).exists() and "://" not in db:
        raise ConfigError(f"database {db} does not exist; build an index first or pass --db")
    if not host.component("sink", sink_name).searchable:
        raise ConfigError(f"sink {sink_name!r} stores rows but cannot search them; search the table in a searchable "
                          "sink, e.g. --sink lancedb")
    name = resolve_table(db, table, sink_name, host, work_dir)
    sink = host.component("sink", sink_name)(db=db, table=name)
    meta = next((t["meta"] for t in sink.tables() if t["table"] == name), None)
    if meta is None:
        raise ConfigError(f"table {name!r} not found in {db}")
    if meta.get("sink", sink_name) != sink_name:  # a table that only the sink which wrote it can search
        sink = host.component("sink", meta["sink"])(db=db, table=name)
    emb = meta["embedder"]
    embedder = host.component("embedder", emb["name"])(model or emb["model"], **emb.get("options", {}))
    embedder.check()
    if embedder.info.fingerprint != meta["model"]["fingerprint"]:
        raise ConfigError(
            f"table {name!r} was embedded with {meta['model']['name']} (fingerprint {meta['model']['fingerprint'][:12]}); "
            f"the model found now is {embedder.info.name} ({embedder.info.fingerprint[:12]}): queries would be "
            "embedded with other weights. Pass --model with the original model, or re-embed the table."
        )
    settings, origin = table_settings(WorkDir(work_dir or Path(db) / "_indexer"), name, sink)
    return Index(name, sink, embedder, meta, settings, origin)


def aggregate_by_doc(hits: list[Hit], k: int) -> list[Hit]:
    """Documents ranked by their best chunk's score (max-P)."""
    return fusion.best_per_doc(hits)[:k]


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries from a jsonl file (BEIR: ``_id``/``text``; also ``id``/``query``) or a TSV of ``qid<TAB>text``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"queries file {p} does not exist")
    out: dict[str, str] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if p.suffix in (".jsonl", ".json"):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p} line {n} is not valid JSON: {exc}") from None
            qid = rec.get("_id", rec.get("id", rec.get("query_id")))
            text = rec.get("text", rec.get("query"))
        else:
            qid, _, text = line.partition("\t")
        if qid is None or not text:
            raise ConfigError(f"{p} line {n}: a query needs an id (_id) and a text")
        out[str(qid)] = text
    return out


def write_trec(results: dict[str, list[Hit]], path: str | Path, tag: str = "indexer", by_doc: bool = False) -> None:
    """A TREC run file, ``qid Q0 docid rank score tag``: docid is the document id with ``by_doc``, else the chunk
    id; lines are tab-separated where an id holds a space."""
    with open(path, "w", encoding="utf-8") as f:
        for qid, hits in results.items():
            for rank, h in enumerate(hits, 1):
                fields = [qid, "Q0", h.doc_id if by_doc else h.id, str(rank), f"{h.score:.6f}", tag]
                # ids with spaces (Wikipedia titles) would break a space-separated line: use tabs for those
                sep = "\t" if any(" " in f for f in fields) else " "
                f.write(sep.join(fields) + "\n")
