"""Searching an index: open a table with the embedder that made it, embed queries, ask the sink, aggregate.

The table's stored metadata names its embedder and model, so a search needs only the database and the table
(or an alias such as ``current``, or nothing when the database holds one table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.components import Embedder, Hit, Sink
from indexer.config import DEFAULT_DB
from indexer.errors import ConfigError
from indexer.plugins import Host, get_host
from indexer.state import WorkDir


@dataclass
class Index:
    table: str
    sink: Sink
    embedder: Embedder
    meta: dict[str, Any]

    def search(self, queries: list[str], k: int = 10, by_doc: bool = False, filter: str | None = None) -> list[list[Hit]]:
        fetch = max(k * 5, k + 50) if by_doc else k  # several chunks of one document may crowd the top k
        results = self.sink.search_queries(queries, self.embedder, fetch, filter=filter)
        return [aggregate_by_doc(hits, k) if by_doc else hits[:k] for hits in results]


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
    return Index(name, sink, embedder, meta)


def aggregate_by_doc(hits: list[Hit], k: int) -> list[Hit]:
    """Documents ranked by their best chunk's score (max-P)."""
    best: dict[str, Hit] = {}
    for h in hits:
        if h.doc_id not in best or h.score > best[h.doc_id].score:
            best[h.doc_id] = h
    return sorted(best.values(), key=lambda h: -h.score)[:k]


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
