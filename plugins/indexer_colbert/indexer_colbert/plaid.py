"""The PLAID sink: a RAGatouille (colbert-ai) PLAID index of indexer's own chunks, kept up to date by shard.

Layout, under ``<db>/_plaid/<table>/`` (LanceDB ignores folders that are not ``.lance`` tables)::

    meta.json                    what the index holds: the model, chunking, source (as the lancedb sink records it)
    rows/<shard>.parquet         the shard's chunks (no vectors): what the index should hold
    pending/<shard>.parquet      the shard's per-token vectors, until the index has taken them
    colbert/indexes/<table>/     RAGatouille's index: PLAID files, collection.json, pid_docid_map.json,
                                 docid_metadata_map.json (chunk id -> doc id, position, metadata, content hash)

``write_shard`` only records the shard (atomically), so a run killed at any point loses nothing; ``close``
brings the index up to date with the recorded rows in one step — a build when there is no index, RAGatouille's
``add_to_index`` for new chunks, ``delete_from_index`` for chunks that are gone, a rebuild for a mix of both —
and an index already up to date is left alone, so rerunning a build is a no-op.

RAGatouille is handed the chunks as they are (``split_documents=False``): chunk ids are its document ids and each
chunk's doc id, position, metadata and content hash travel as its document metadata. Its PLAID indexer is handed
the per-token vectors the embedder already made (the same colbert-ai ``Checkpoint``), so nothing is encoded twice
and the index holds exactly the vectors a brute-force MaxSim over the work directory sees.

Two defects of RAGatouille 0.0.9.post2 / colbert-ai 0.2.22 are worked around here, on the files they leave:
``delete_from_index`` compacts ``collection.json`` while PLAID keeps passage ids, so later results point at the
wrong texts (RAGatouille issue 222) — the collection is written back aligned with the passage ids; and deleting
passage 0 fails because colbert-ai matches the zero padding of ``ivf.pid.pt`` (ColBERT issue 407) — the padding
is dropped before a delete (colbert-ai pads the inverted file again when it loads it). Additions after deletions
would be numbered inconsistently by RAGatouille, so they rebuild the index instead.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from indexer.components import Embedder, Hit, Sink
from indexer.errors import ConfigError
from indexer.log import get_logger
from indexer.options import Options, option
from indexer.types import ModelInfo
from indexer_lancedb import check_shard_column

from indexer_colbert.quiet import quiet

log = get_logger("colbert")

SINK_NAME = "colbert"
ROW_COLUMNS = ["id", "doc_id", "chunk_index", "text", "metadata", "content_hash", "token_count"]
# Candidates PLAID ranks by centroid scores before scoring a quarter of them exactly. RAGatouille sets 1024; on the
# demo corpus 2048 came closer to an exact MaxSim at little cost (docs/colbert.md, check_colbert_agreement --sweep).
SEARCH_NDOCS = 2048


@dataclass(frozen=True)
class PLAIDOptions(Options):
    reuse_vectors: bool = option(True, "hand PLAID the embedder's vectors; false lets RAGatouille encode the chunk "
                                 "texts itself (twice the encoding, no uncompressed vectors held while building)")
    use_faiss: bool = option(False, "k-means with faiss instead of RAGatouille's PyTorch k-means")
    check_memory: bool = option(True, "refuse, before building, a corpus whose index will not fit in memory")
    nbits: int | None = option(None, "bits per dimension of the compressed residuals, 1, 2, 4 or 8; auto: 8 below "
                               "10,000 chunks, else 2. Read when the index is (re)built")
    ndocs: int | None = option(None, f"candidate chunks PLAID ranks by their centroids before scoring the best "
                               f"quarter exactly (auto: {SEARCH_NDOCS}); recorded with the index, used by every "
                               "search", ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        from indexer_colbert.estimate import parse_nbits

        parse_nbits(self.nbits)  # one of the bit widths PLAID has: fails when the options are parsed


class PLAIDSink(Sink):
    """A RAGatouille PLAID index per table, searchable with ``indexer search --sink colbert``; its options are
    :class:`PLAIDOptions`.

    :param db: the database folder (the index lives in ``<db>/_plaid/<table>``).
    """

    description: ClassVar[str] = "RAGatouille PLAID index (ColBERT late interaction)"
    searchable: ClassVar[bool] = True
    name = SINK_NAME
    Options = PLAIDOptions

    def __init__(self, *, db: str, table: str, **options: Any):
        super().__init__(db=db, table=table, **options)
        from indexer_colbert.estimate import parse_nbits

        o = self.options
        self.nbits = parse_nbits(o.nbits)
        self.ndocs = SEARCH_NDOCS if o.ndocs is None else o.ndocs
        self.reuse_vectors, self.use_faiss, self.check_memory = o.reuse_vectors, o.use_faiss, o.check_memory
        self._meta: dict[str, Any] | None = None
        self._rag: Any = None
        self._writing = False

    @property
    def root(self) -> Path:
        return Path(self.db) / "_plaid" / self.table

    @property
    def index_path(self) -> Path:
        return self.root / "colbert" / "indexes" / self.table

    def check(self) -> None:
        if "://" in self.db:
            raise ConfigError(f"the colbert sink writes a local folder; --db {self.db} is a URI")
        if Path(self.db).is_file():
            raise ConfigError(f"--db {self.db} is a file; the colbert sink needs a folder")
        if not self.table or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in self.table):
            raise ConfigError(f"table name {self.table!r} may contain only letters, digits, underscores, hyphens "
                              "and periods")

    # ----------------------------------------------------------------------------------------------------------
    # Writing

    def open(self, model: ModelInfo, meta: dict[str, Any]) -> None:
        if model.kind != "multivector":
            raise ConfigError(f"the colbert sink indexes ColBERT token vectors; model {model.name} makes {model.kind} "
                              "vectors (build with --late-interaction colbert)")
        old = self.meta()
        if old is not None and old["model"]["fingerprint"] != model.fingerprint:
            raise ConfigError(f"PLAID index {self.table} in {self.db} holds vectors of model {old['model']['name']}; "
                              "a new model writes a new table: pass another --table or leave --table out")
        self._meta = json.loads(json.dumps({**meta, "model": asdict(model), "sink": SINK_NAME,
                                            "search": {"ndocs": self.ndocs}}, default=str))
        if self._meta != old:  # an unchanged index keeps every file as it was
            _write_json(self.root / "meta.json", self._meta)
        self._writing = True

    def write_shard(self, shard: str, batches: Iterable[Any]) -> int:
        if not self._writing:
            raise RuntimeError("PLAIDSink.open() must be called before write_shard()")
        import pyarrow as pa

        tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
        rows_file, pending_file = self._rows_file(shard), self._pending_file(shard)
        if not tables:
            pending_file.unlink(missing_ok=True)
            rows_file.unlink(missing_ok=True)
            return 0
        table = pa.concat_tables(tables)
        check_shard_column(table, shard)
        # Vectors first: rows without their vectors only cost an encoding, vectors without rows are ignored.
        _write_parquet(pending_file, table.select(["id", "content_hash", "vector"]))
        _write_parquet(rows_file, table.select(ROW_COLUMNS))
        return table.num_rows

    def close(self) -> None:
        writing, self._writing = self._writing, False
        if writing:
            self.sync()

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:  # the recorded shards are reconciled by the next run
            self._writing = False
        return super().__exit__(exc_type, *exc)

    def sync(self) -> dict[str, int]:
        """Bring the PLAID index up to date with the recorded rows; returns what changed."""
        desired = self._desired()
        indexed = self._indexed()
        deletes = sorted(i for i, h in indexed.items() if i not in desired or desired[i]["content_hash"] != h)
        adds = [i for i, row in desired.items() if indexed.get(i) != row["content_hash"]]
        done = {"added": len(adds), "deleted": len(deletes), "rebuilt": 0}
        if not deletes and not adds:
            self._clear_pending()
            return done
        if not desired:
            shutil.rmtree(self.root / "colbert", ignore_errors=True)
            self._clear_pending()
            return done
        rebuild = not indexed or (adds and (deletes or self._has_holes()))
        self._check_fits(desired, desired if rebuild else {i: desired[i] for i in adds})
        with quiet(), self._vectors(desired if rebuild else {i: desired[i] for i in adds}):
            if rebuild:
                self._build(desired)
                done["rebuilt"] = 1
            elif deletes:
                self._delete(deletes, desired)
            else:
                self._add([desired[i] for i in adds])
        self._rag = None
        self._clear_pending()
        log.info(f"PLAID index {self.table!r}: {'rebuilt' if done['rebuilt'] else 'updated'} with {len(adds):,} added "
                 f"and {len(deletes):,} deleted chunks ({len(desired):,} in all)")
        return done

    def _build(self, desired: dict[str, dict[str, Any]]) -> None:
        from ragatouille import RAGPretrainedModel

        from indexer_colbert.estimate import residual_bits

        rows = list(desired.values())
        rag = RAGPretrainedModel.from_pretrained(str(self._checkpoint()), index_root=str(self.root), verbose=0)
        with _residual_bits(residual_bits(len(rows), self.nbits)):
            rag.index(collection=[r["text"] for r in rows], document_ids=[r["id"] for r in rows],
                      document_metadatas=[_document_metadata(r) for r in rows], index_name=self.table,
                      overwrite_index=True, max_document_length=self._doc_maxlen(), split_documents=False,
                      use_faiss=self.use_faiss)

    def _add(self, rows: list[dict[str, Any]]) -> None:
        rag = self._open_rag()
        rag.add_to_index([r["text"] for r in rows], new_document_ids=[r["id"] for r in rows],
                         new_document_metadatas=[_document_metadata(r) for r in rows], index_name=self.table,
                         split_documents=False, use_faiss=self.use_faiss)

    def _delete(self, ids: list[str], desired: dict[str, dict[str, Any]]) -> None:
        import torch

        ivf_file = self.index_path / "ivf.pid.pt"
        if ivf_file.exists():  # ColBERT issue 407: drop the padding that matches passage 0
            ivf, lengths = torch.load(ivf_file, map_location="cpu")
            torch.save((ivf[: int(lengths.sum())], lengths), ivf_file)
        passages = len(_read_json(self.index_path / "collection.json") or [])
        rag = self._open_rag()
        rag.delete_from_index(set(ids), index_name=self.table)
        # RAGatouille issue 222: keep collection.json aligned with PLAID's passage ids.
        aligned = [""] * passages
        for pid, chunk in rag.model.pid_docid_map.items():
            aligned[int(pid)] = desired[chunk]["text"]
        _write_json(self.index_path / "collection.json", aligned)

    # ----------------------------------------------------------------------------------------------------------
    # Reading

    def search(self, vectors: Any, k: int = 10, *, filter: str | None = None) -> list[list[Hit]]:
        raise ConfigError("the colbert sink searches query texts (search_queries): RAGatouille encodes them itself")

    def search_queries(self, queries: Sequence[str], embedder: Embedder | None = None, k: int = 10, *,
                       filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` chunks per query, best first, as RAGatouille's PLAID search ranks them (``Hit.score`` is
        ColBERT's MaxSim over the index's decompressed vectors)."""
        if filter:
            raise ConfigError("the colbert sink cannot filter results; search the lancedb-multivector table to filter")
        if not self.index_path.is_dir():
            raise ConfigError(f"no PLAID index {self.table} in {self.db}; build it first "
                              f"(indexer build SOURCE --late-interaction colbert --db {self.db})")
        rag = self._open_rag()
        live = len(rag.model.pid_docid_map)
        out = []
        for q in queries:
            if k < 1 or not live:
                out.append([])
                continue
            with quiet():
                results = rag.search(q, k=min(k, live))
            hits = [_hit(r) for r in results]
            hits.sort(key=lambda h: (-h.score, h.id))
            out.append(hits)
        return out

    def count(self) -> int:
        """Chunks the index holds once it is up to date (read from the row files' footers)."""
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in (self.root / "rows").glob("*.parquet"))

    def tables(self) -> list[dict[str, Any]]:
        folder = Path(self.db) / "_plaid"
        out = []
        for meta_file in sorted(folder.glob("*/meta.json")) if folder.is_dir() else []:
            sink = PLAIDSink(db=self.db, table=meta_file.parent.name)
            out.append({"table": sink.table, "rows": sink.count(), "meta": sink.meta()})
        return out

    def meta(self) -> dict[str, Any] | None:
        """What the index holds (``meta.json``), read once."""
        if self._meta is None:
            self._meta = _read_json(self.root / "meta.json")
        return self._meta

    # ----------------------------------------------------------------------------------------------------------

    def _rows_file(self, shard: str) -> Path:
        return self.root / "rows" / f"{shard}.parquet"

    def _pending_file(self, shard: str) -> Path:
        return self.root / "pending" / f"{shard}.parquet"

    def _desired(self) -> dict[str, dict[str, Any]]:
        import pyarrow.parquet as pq

        out: dict[str, dict[str, Any]] = {}
        for f in sorted((self.root / "rows").glob("*.parquet")):
            for row in pq.read_table(f).to_pylist():
                out[row["id"]] = row
        return out

    def _indexed(self) -> dict[str, str]:
        """chunk id -> content hash of what the PLAID index holds."""
        ids = _read_json(self.index_path / "pid_docid_map.json")
        if not ids:
            return {}
        meta = _read_json(self.index_path / "docid_metadata_map.json") or {}
        return {chunk: (meta.get(chunk) or {}).get("content_hash", "") for chunk in ids.values()}

    def _has_holes(self) -> bool:
        """Whether deleted passages still hold their ids (RAGatouille would number additions wrongly)."""
        collection = _read_json(self.index_path / "collection.json") or []
        return len(collection) != len(_read_json(self.index_path / "pid_docid_map.json") or {})

    def _clear_pending(self) -> None:
        shutil.rmtree(self.root / "pending", ignore_errors=True)

    @contextlib.contextmanager
    def _vectors(self, rows: dict[str, dict[str, Any]]) -> Iterator[None]:
        if not self.reuse_vectors:
            yield
            return
        import pyarrow.parquet as pq

        from indexer.rows import multivector_rows

        by_text: dict[str, Any] = {}
        for f in sorted((self.root / "pending").glob("*.parquet")):
            table = pq.read_table(f)
            hashes = table.column("content_hash").to_pylist()
            ids = table.column("id").to_pylist()
            for chunk, h, vectors in zip(ids, hashes, multivector_rows(table.column("vector"))):
                row = rows.get(chunk)
                if row is not None and row["content_hash"] == h:
                    by_text[row["text"]] = vectors
        with precomputed_vectors(by_text):
            yield

    def _check_fits(self, index_rows: dict[str, dict[str, Any]], added: dict[str, dict[str, Any]]) -> None:
        if not self.check_memory:
            return
        from indexer_colbert.estimate import available_memory, estimate

        ram, _ = available_memory()
        est = estimate(len(index_rows), sum(r["token_count"] for r in index_rows.values()),
                       int(self.meta()["model"]["dimension"]), added_passages=len(added),
                       added_tokens=sum(r["token_count"] for r in added.values()) if self.reuse_vectors else 0,
                       use_faiss=self.use_faiss, nbits=self.nbits)
        est.check_fits(ram)

    def _checkpoint(self) -> Path:
        from indexer_colbert.checkpoint import resolve_checkpoint

        meta = self.meta() or {}
        return resolve_checkpoint((meta.get("embedder") or {}).get("model") or meta["model"]["name"])

    def _doc_maxlen(self) -> int:
        return int(self.meta()["model"]["max_tokens"])

    def _open_rag(self) -> Any:
        if self._rag is None:
            with quiet():
                from ragatouille import RAGPretrainedModel

                self._rag = RAGPretrainedModel.from_index(str(self.index_path), verbose=0)
            _search_depth(self._rag, int(((self.meta() or {}).get("search") or {}).get("ndocs") or SEARCH_NDOCS))
        return self._rag


def _search_depth(rag: Any, ndocs: int) -> None:
    """Make RAGatouille's PLAID searcher rank ``ndocs`` candidates (or 4 x k, if more): RAGatouille applies its
    own settings when the searcher loads (on the first search), so ours are applied right after."""
    index = rag.model.model_index
    load = index._load_searcher

    def load_then_configure(*args: Any, **kwargs: Any) -> None:
        load(*args, **kwargs)
        index.searcher.configure(ndocs=ndocs)

    index._load_searcher = load_then_configure


@contextlib.contextmanager
def _residual_bits(nbits: int) -> Iterator[None]:
    """While active, PLAID indexes that RAGatouille builds compress residuals to ``nbits`` bits (RAGatouille sets
    its own choice on the config it hands colbert-ai's ``Indexer``; this sets ours on the way in)."""
    import ragatouille.models.index as rag_index

    original = rag_index.Indexer

    def indexer(*args: Any, config: Any, **kwargs: Any) -> Any:
        config.configure(nbits=nbits)
        return original(*args, config=config, **kwargs)

    rag_index.Indexer = indexer
    try:
        yield
    finally:
        rag_index.Indexer = original


@contextlib.contextmanager
def precomputed_vectors(by_text: dict[str, Any]) -> Iterator[None]:
    """While active, colbert-ai's passage encoder (used by PLAID indexing and index updates) returns the given
    per-token vectors for the texts it has, and encodes only the others."""
    import torch
    from colbert.indexing.collection_encoder import CollectionEncoder

    original = CollectionEncoder.encode_passages

    def encode_passages(self: Any, passages: list[str]) -> tuple[Any, Any]:
        if not passages:
            return None, None
        missing = list(dict.fromkeys(p for p in passages if p not in by_text))
        encoded: dict[str, Any] = {}
        if missing:
            embs, lengths = original(self, missing)
            for text, part in zip(missing, torch.split(embs, list(lengths))):
                encoded[text] = part
        parts = [torch.from_numpy(by_text[p]) if p in by_text else encoded[p].float() for p in passages]
        return torch.cat(parts), [len(p) for p in parts]

    CollectionEncoder.encode_passages = encode_passages
    try:
        yield
    finally:
        CollectionEncoder.encode_passages = original


def _document_metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {"doc_id": row["doc_id"], "chunk_index": row["chunk_index"], "content_hash": row["content_hash"],
            "metadata": json.loads(row["metadata"]) if row["metadata"] else {}}


def _hit(result: dict[str, Any]) -> Hit:
    meta = result.get("document_metadata") or {}
    return Hit(id=result["document_id"], doc_id=meta.get("doc_id", result["document_id"]), score=float(result["score"]),
               text=result.get("content", ""), chunk_index=int(meta.get("chunk_index", 0)),
               metadata=meta.get("metadata") or {})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, data: Any) -> None:
    from indexer.state import atomic_write_text

    atomic_write_text(path, json.dumps(data, sort_keys=True))


def _write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    from indexer.state import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
