"""The Python API. The CLI is a thin layer over these functions.

    import indexer
    summary = indexer.build("data/demo/wiki-demo.jsonl", db="demo.lancedb", title_field="title")
    hits = indexer.search("who painted the Mona Lisa", db="demo.lancedb", k=5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from indexer.config import DEFAULT_DB, BuildConfig
from indexer.summary import RunSummary

if TYPE_CHECKING:
    from indexer.retrieval import SearchResults


def build(source: str | None = None, *, config: str | Path | None = None, **settings: Any) -> RunSummary:
    """Build or update an index. ``settings`` are :class:`BuildConfig` fields; ``config`` a TOML file."""
    from indexer import pipeline

    return pipeline.build(BuildConfig.load(config, source=source, **settings))


def reembed(from_table: str, model: str, *, config: str | Path | None = None, **settings: Any) -> RunSummary:
    """Embed the chunks stored for ``from_table`` with ``model`` into a new model-versioned table. To also score
    both tables on held-out judgements and move the alias ``current`` (what ``indexer reembed`` does), use
    :func:`indexer.versions.reembed`; aliases and pruning are there too."""
    from indexer import pipeline

    return pipeline.reembed(BuildConfig.load(config, model=model, **settings), from_table)


def search(query: str, *, db: str = DEFAULT_DB, table: str | None = None, k: int = 10, by_doc: bool = False,
           filter: str | None = None, sink: str = "lancedb", mode: str | None = None, fusion: str | None = None,
           rrf_k: int | None = None, text_weight: float | None = None, fuse: str | None = None) -> "SearchResults":
    """Top ``k`` chunks (or documents, with ``by_doc``) for one query; ``sink`` names the searchable sink.

    ``mode`` is ``dense``, ``text`` or ``hybrid`` (with ``fusion`` ``rrf`` or ``convex``, ``rrf_k``,
    ``text_weight`` and ``fuse``: documents fused after aggregating their chunks, ``doc``, or before, ``chunk``); what is not given comes from the settings ``indexer tune-search`` recorded for the table, else
    the defaults. ``filter`` is a SQL predicate on the table's columns (e.g. ``"topic = 'Science'"``), applied
    before ranking. The result is a list of hits whose ``.settings`` say how they were ranked."""
    return search_batch({"q": query}, db=db, table=table, k=k, by_doc=by_doc, filter=filter, sink=sink, mode=mode,
                        fusion=fusion, rrf_k=rrf_k, text_weight=text_weight, fuse=fuse)["q"]


def search_batch(queries: dict[str, str], *, db: str = DEFAULT_DB, table: str | None = None, k: int = 100,
                 by_doc: bool = False, run_file: str | Path | None = None, tag: str = "indexer",
                 sink: str = "lancedb", filter: str | None = None, mode: str | None = None,
                 fusion: str | None = None, rrf_k: int | None = None,
                 text_weight: float | None = None, fuse: str | None = None) -> "dict[str, SearchResults]":
    """Search many queries (id → text), with the options of :func:`search`; optionally write a TREC run file."""
    from indexer.retrieval import SearchResults, open_index, write_trec

    index = open_index(db, table, sink_name=sink)
    settings, origin = index.resolve(mode=mode, fusion=fusion, rrf_k=rrf_k, text_weight=text_weight, fuse=fuse)
    ids = list(queries)
    ranked = index.search([queries[q] for q in ids], k, by_doc, filter, settings)
    results = {q: SearchResults(hits, settings, origin) for q, hits in zip(ids, ranked)}
    if run_file:
        write_trec(results, run_file, tag=tag, by_doc=by_doc)
    return results


def evaluate(qrels: str | Path, run_file: str | Path) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 of a TREC run against BEIR/TREC qrels."""
    from indexer.metrics import evaluate_files

    return evaluate_files(qrels, run_file)


def log_feedback(query: str, positive_id: str, *, db: str = DEFAULT_DB, relevance: float = 1.0,
                 negative_ids: list[str] | tuple[str, ...] = (), positive_text: str | None = None, source: str = "api",
                 store: str = "lancedb") -> bool:
    """Record that ``positive_id`` (a chunk or document id) answers ``query`` (``relevance=0``: it does not), in the
    feedback store of ``db``; returns whether the pair is new. ``indexer finetune`` trains on these pairs."""
    from indexer.components import FeedbackPair
    from indexer.plugins import get_host

    pair = FeedbackPair(query, positive_id, positive_text, list(negative_ids), relevance, source)
    return get_host().component("feedback_store", store)(db=db).add([pair]) == 1


def info(db: str = DEFAULT_DB, sink: str = "lancedb") -> list[dict[str, Any]]:
    """Every table in ``db``: rows, model fingerprint, chunk settings, source; plus aliases and how it is searched
    by default (``search``: the settings and whether tune-search recorded them)."""
    from indexer.plugins import get_host
    from indexer.state import WorkDir

    if not Path(db).exists() and "://" not in db:
        from indexer.errors import ConfigError

        raise ConfigError(f"database {db} does not exist")
    from indexer.retrieval import table_settings

    from indexer.config import EMBEDDER_SETTINGS

    host = get_host()
    tables = host.component("sink", sink)(db=db, table="").tables()
    work = WorkDir(Path(db) / "_indexer")
    aliases = work.aliases()
    for t in tables:
        embedder = t["meta"].get("embedder") or {}
        if embedder.get("options"):  # a TEI url or token is recorded to search with; it is not shown
            embedder["options"] = host.public_options("embedder", str(embedder.get("name", "")), embedder["options"],
                                                      keep=EMBEDDER_SETTINGS)
        t["aliases"] = sorted(a for a, target in aliases.items() if target == t["table"])
        # as open_index searches it: a table without a full-text index is searched dense, whatever was recorded
        table_sink = host.component("sink", t["meta"].get("sink", sink))(db=db, table=t["table"])
        settings, origin = table_settings(work, t["table"], table_sink)
        t["search"] = {"settings": settings.to_dict(), "from": origin}
    return tables
