"""Base classes for every kind of component. A plugin subclasses one and implements its abstract method(s);
batching, validation and bookkeeping live here, once.

Component classes are constructed from configuration (keyword arguments that mirror CLI flags / TOML keys) and
must be cheap to construct: heavy work (loading a model, opening a database) happens on first use, and
``check()`` validates configuration before any work starts. A component's own options (``--option KIND.NAME``)
are declared once, as the dataclass :attr:`Component.Options` (:mod:`indexer.options`); the base constructor parses
the keyword arguments it does not take itself into ``self.options``, so an unknown or ill-typed one fails there.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from indexer.options import NoOptions, Options, option, option_owner
from indexer.types import BadRecord, Chunk, Document, ModelInfo, Shard

if TYPE_CHECKING:  # state imports pyarrow, which `indexer --help` must not load
    from indexer.state import Location

# --------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------

DEFAULT_MAX_DOC_CHARS = 5_000_000


@dataclass
class FieldMapping:
    """How raw records map onto :class:`Document` fields.

    ``id_field=None`` tries ``id`` then ``_id``; a record with neither gets ``<shard>:<locator>`` as its id.
    ``title_field`` (when set and present) is joined before the text with ``title_separator``.
    ``metadata_fields=["*"]`` keeps every other column.
    """

    id_field: str | None = None
    text_field: str = "text"
    title_field: str | None = None
    title_separator: str = "\n\n"
    metadata_fields: list[str] = field(default_factory=list)
    max_doc_chars: int = DEFAULT_MAX_DOC_CHARS


class Component(ABC):
    """What every plugin component declares: a one-line ``description`` (shown by ``indexer plugins``; the
    docstring's first line when empty), the ``name`` it is registered under (for messages) and its
    :class:`~indexer.options.Options` (``indexer plugins --options`` lists them)."""

    description: ClassVar[str] = ""
    #: The name it is registered under; messages name the component by it (the class name when empty).
    name: ClassVar[str] = ""
    #: The options it takes (``--option KIND.NAME=VALUE``): a frozen dataclass of :func:`indexer.options.option`.
    Options: ClassVar[type[Options]] = NoOptions
    #: Which kind of component it is, in messages ("embedder"); set by each base class.
    component_kind: ClassVar[str] = ""
    #: Settings it reads from environment variables rather than ``--option`` (the Modal app's), when it has any:
    #: ``indexer plugins --options`` lists them with their variables.
    environment: ClassVar[type[Options] | None] = None

    @classmethod
    def option_owner(cls) -> str:
        """How messages about its options name it: ``tei embedder``, ``lancedb`` (a sink, as ``--option`` names it)."""
        return option_owner(cls.component_kind, cls.name or cls.__name__)

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> Options:
        """``options`` as the declared :attr:`Options`; :class:`~indexer.errors.ConfigError` for a bad one."""
        return cls.Options.parse(options, owner=cls.option_owner())


@dataclass(frozen=True)
class SourceOptions(Options):
    """Every source takes ``shard_size`` (the ``--shard-size`` flag); one that cuts no inputs ignores it."""

    shard_size: str | None = option(None, "how big an input may be before it is cut into shards (--shard-size: "
                                          "64MB, 512KiB, 100000rows)")


class Source(Component):
    """Reads a corpus as shards of records. Subclasses implement :meth:`shards` and :meth:`records`;
    the base maps fields, validates and reports bad records."""

    component_kind = "source"
    Options = SourceOptions

    def __init__(self, uri: str, *, mapping: FieldMapping | None = None, **options: Any):
        self.uri = uri
        self.mapping = mapping or FieldMapping()
        self.options = self.parse_options(options)

    @classmethod
    def can_read(cls, uri: str) -> bool:
        """Whether this source reads ``uri`` when the user did not name a source (auto-detection)."""
        return False

    def check(self) -> None:
        """Raise :class:`indexer.errors.ConfigError` when the input cannot be read. Called before any work."""

    def identity(self) -> str:
        """A string that identifies what this source reads (used in the chunk set's key)."""
        return f"{type(self).__name__}:{self.uri}"

    @abstractmethod
    def shards(self) -> list[Shard]:
        """The shards of the input, in a stable order."""

    @abstractmethod
    def records(self, shard: Shard) -> Iterator[tuple[str, Any]]:
        """Yield ``(locator, record)`` for each raw record of a shard; ``locator`` says where it is ("line 17").

        ``record`` is a ``dict`` of fields, or a :class:`BadRecord`-worthy ``Exception`` when the raw record could
        not even be parsed (invalid JSON, invalid UTF-8); the base reports it and moves on.
        """

    def read(self, shard: Shard) -> Iterator[Document | BadRecord]:
        """Documents of a shard, with bad records reported in place (never raised)."""
        seen: dict[str, str] = {}
        m = self.mapping
        for locator, record in self.records(shard):
            if isinstance(record, Exception):
                yield BadRecord(shard.key, locator, str(record))
                continue
            if not isinstance(record, dict):
                yield BadRecord(shard.key, locator, f"record is a {type(record).__name__}, not an object")
                continue
            doc_id = _record_id(record, m.id_field)
            if doc_id is None:
                if m.id_field is not None:
                    yield BadRecord(shard.key, locator, f"missing id field {m.id_field!r}")
                    continue
                doc_id = f"{shard.key}:{locator}"
            name = f"{doc_id} ({locator})" if doc_id not in (locator, f"{shard.key}:{locator}") else locator
            text = record.get(m.text_field)
            if m.text_field not in record or text is None:
                yield BadRecord(shard.key, name, f"missing text field {m.text_field!r}")
                continue
            if not isinstance(text, str):
                yield BadRecord(shard.key, name, f"text field {m.text_field!r} is {type(text).__name__}, not a string")
                continue
            if not text.strip():
                yield BadRecord(shard.key, name, "empty text" if not text else "text is only whitespace")
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # lone surrogates from JSON escapes such as "\ud800"
                yield BadRecord(shard.key, name, f"text is not valid Unicode at character {exc.start} ({exc.reason})")
                continue
            if m.title_field:
                title = record.get(m.title_field)
                if isinstance(title, str) and title.strip():
                    text = title.strip() + m.title_separator + text
            if len(text) > m.max_doc_chars:
                yield BadRecord(
                    shard.key, name, f"document has {len(text):,} characters, over the limit of {m.max_doc_chars:,} "
                    "(raise it with --max-doc-chars)"
                )
                continue
            if doc_id in seen:
                yield BadRecord(shard.key, name, f"duplicate id {doc_id!r} (first at {seen[doc_id]}); kept the first")
                continue
            seen[doc_id] = locator
            yield Document(id=doc_id, text=text, metadata=_metadata(record, m))


def _record_id(record: dict, id_field: str | None) -> str | None:
    for key in [id_field] if id_field else ["id", "_id"]:
        value = record.get(key)
        if value is not None and str(value) != "":
            return str(value)
    return None


def _metadata(record: dict, m: FieldMapping) -> dict[str, Any]:
    if not m.metadata_fields:
        return {}
    if m.metadata_fields == ["*"]:
        skip = {m.text_field, m.id_field or "id", "_id", m.title_field}
        return {k: v for k, v in record.items() if k not in skip}
    return {k: record[k] for k in m.metadata_fields if k in record}


# --------------------------------------------------------------------------------------------------------------
# Chunkers
# --------------------------------------------------------------------------------------------------------------


class Chunker(Component):
    """Cuts documents into chunks by token count, using the embedding model's own fast tokenizer.

    :param tokenizer: a ``tokenizers.Tokenizer`` (the fast tokenizer of the embedding model).
    :param max_tokens: most content tokens per chunk (special tokens excluded).
    :param overlap: tokens shared by consecutive chunks of one document.
    :param min_tokens: a final chunk that would add fewer new tokens than this is not emitted on its own.
    :param boundaries: ``"token"``, ``"sentence"`` or ``"paragraph"``: where a chunk prefers to end.
    """

    component_kind = "chunker"

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_tokens: int,
        overlap: int = 0,
        min_tokens: int = 0,
        boundaries: str = "token",
        tokenizer_key: str = "",
        **options: Any,
    ):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.min_tokens = min_tokens
        self.boundaries = boundaries
        self.tokenizer_key = tokenizer_key
        self.options = self.parse_options(options)

    def check(self) -> None:
        """Raise :class:`indexer.errors.ConfigError` for settings that cannot work."""
        from indexer.errors import ConfigError

        if self.max_tokens < 1:
            raise ConfigError(f"--max-tokens must be at least 1 (got {self.max_tokens})")
        if not 0 <= self.overlap < self.max_tokens:
            raise ConfigError(f"--overlap must be between 0 and --max-tokens - 1 (got {self.overlap})")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ConfigError(f"--min-tokens must be between 0 and --max-tokens (got {self.min_tokens})")
        if self.boundaries not in ("token", "sentence", "paragraph"):
            raise ConfigError(f"--boundaries must be token, sentence or paragraph (got {self.boundaries!r})")

    def settings(self) -> dict[str, Any]:
        return {
            "chunker": type(self).__name__,
            "max_tokens": self.max_tokens,
            "overlap": self.overlap,
            "min_tokens": self.min_tokens,
            "boundaries": self.boundaries,
            "tokenizer": self.tokenizer_key,
        }

    def settings_key(self) -> str:
        """Goes into every chunk's content hash: the same text under other settings is another chunk."""
        return ";".join(f"{k}={v}" for k, v in sorted(self.settings().items()))

    @abstractmethod
    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks of one document, in order, with deterministic ids and hashes."""

    def chunk_many(self, docs: Iterable[Document]) -> Iterator[Chunk]:
        for doc in docs:
            yield from self.chunk(doc)


# --------------------------------------------------------------------------------------------------------------
# Embedders
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedderOptions(Options):
    """What every embedder takes; an embedder's own declaration subclasses it."""

    max_batch_size: int = option(512, "most chunks per batch, however short they are", ge=1)


class Embedder(Component):
    """Turns chunks into vectors. Subclasses implement :meth:`embed_batch` (and :meth:`load`/:attr:`info`);
    the base sorts chunks by token count, packs them into batches under a padded-token budget and returns
    vectors in input order.

    :param model: a model id or path.
    :param device, precision: the build's ``--device`` and ``--precision`` (an embedder that does not choose them
        accepts them and checks what it can).
    :param batch_tokens: padded tokens per batch (batch size x longest chunk in it); ``None`` leaves it to
        :meth:`token_budget` (:attr:`default_batch_tokens`, or what a subclass picks for its device).
    """

    component_kind = "embedder"
    Options = EmbedderOptions

    #: vectors per chunk: "dense" (one) or "multivector" (one per token, late interaction).
    kind: ClassVar[str] = "dense"
    #: The model ``--late-interaction NAME`` embeds with when no --model is given (None: the build's default).
    default_model: ClassVar[str | None] = None
    #: The padded-token budget per batch when none is given.
    default_batch_tokens: ClassVar[int] = 16384
    #: Whether it embeds in a worker that has none of this machine's files (no model folder, no torch): it reaches
    #: its model over the network (a TEI server, Modal GPUs). A ``remote`` executor runs only portable embedders.
    portable: ClassVar[bool] = False

    def __init__(self, model: str, *, device: str = "auto", precision: str = "auto", batch_tokens: int | None = None,
                 **options: Any):
        self.model = model
        self.device = device
        self.precision = precision
        self.batch_tokens = batch_tokens
        self.options = self.parse_options(options)
        self.max_batch_size = self.options.max_batch_size

    def check(self) -> None:
        """Raise :class:`indexer.errors.ConfigError` when the model cannot be found. Called before any work."""

    def release(self) -> None:
        """Let go of a loaded model (the next embedding loads it again). The pipeline calls this when a run has
        nothing more to embed, before the sinks build their indexes."""

    def sample_size(self) -> int:
        """How many chunks of the corpus :meth:`settle` wants to see; 0 (the default): it decides nothing from
        the corpus, and the pipeline reads no sample."""
        return 0

    def settle(self, sample: Callable[[], Sequence[Chunk]], previous: dict[str, Any] | None = None
               ) -> dict[str, Any] | None:
        """Make the choices that depend on the corpus (the local embedder's int8 gate) from ``sample()``: chunks
        of the corpus being built. ``previous`` is what this returned when the table was last built with the same
        model; repeating that decision keeps every row of a table embedded alike, however the corpus changes.
        Called once per run, before any work, in the planning process; afterwards :attr:`info` is final and the
        pipeline hands ``info.precision`` to every worker. Returns what was measured (recorded with the table and
        in the run summary), or None when nothing was decided."""
        return None

    def token_budget(self) -> int:
        """Padded tokens per batch that :meth:`batches` packs to."""
        return self.batch_tokens if self.batch_tokens is not None else self.default_batch_tokens

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """The model's fingerprint, dimension, pooling, normalisation, limits and precision."""

    def tokenizer(self) -> Any:
        """The model's fast tokenizer (``tokenizers.Tokenizer``), which the chunker counts with."""
        raise NotImplementedError(f"{type(self).__name__} does not expose a tokenizer")

    def tokenizer_key(self) -> str:
        """Identifies the tokenizer (a hash of its definition); goes into chunk content hashes."""
        return self.info.fingerprint

    def content_token_limit(self) -> int:
        """Most content tokens a chunk can hold so that, with special tokens added, it fits the model."""
        return self.info.max_tokens - 2

    @abstractmethod
    def embed_batch(self, chunks: Sequence[Chunk]) -> Any:
        """Vectors (``numpy.ndarray``, float32, one row per chunk, same order) for one batch of chunks.

        Chunks may carry ``token_ids`` from the chunker; use them instead of tokenising again when they come
        from the same tokenizer.
        """

    def batches(self, chunks: Sequence[Chunk]) -> list[list[int]]:
        """Indices of ``chunks`` grouped into batches: sorted by token count (longest first, so a memory
        problem shows up at once) and packed so that batch size x longest <= :meth:`token_budget`."""
        budget = self.token_budget()
        order = sorted(range(len(chunks)), key=lambda i: -chunks[i].token_count)
        out: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            n = chunks[i].token_count + 2
            new_longest = max(longest, n)
            if current and (new_longest * (len(current) + 1) > budget or len(current) >= self.max_batch_size):
                out.append(current)
                current, new_longest = [], n
            current.append(i)
            longest = new_longest
        if current:
            out.append(current)
        return out

    def embed(self, chunks: Sequence[Chunk], progress: Callable[[int], None] | None = None) -> Any:
        """Vectors for ``chunks``, in input order."""
        import numpy as np

        if not chunks:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        out = None
        for idx in self.batches(chunks):
            vecs = np.asarray(self.embed_batch([chunks[i] for i in idx]), dtype=np.float32)
            if out is None:
                out = np.empty((len(chunks), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
            if progress:
                progress(len(idx))
        return out

    def embed_queries(self, queries: Sequence[str]) -> Any:
        """Vectors for search queries (same model, no chunking; over-long queries are truncated)."""
        chunks = [Chunk(f"q{i}", "", 0, q, max(1, math.ceil(len(q) / 4)), 0, len(q), "") for i, q in enumerate(queries)]
        return self.embed(chunks)


# --------------------------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    id: str
    doc_id: str
    score: float
    text: str = ""
    chunk_index: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


class Sink(Component):
    """Stores embedded chunks. A sink is a context manager: ``open`` on enter, ``close`` on exit.

    Rows arrive per shard as Arrow record batches with ``indexer.types.embedded_schema``; writing a shard
    replaces whatever the sink held for that shard (upsert by ``id``, rows of the shard that are no longer
    produced are removed), atomically where the store allows, so a rerun never duplicates.
    """

    #: Whether :meth:`search` is implemented (``indexer search`` refuses other sinks up front).
    searchable: ClassVar[bool] = False
    #: The search modes it serves (:mod:`indexer.retrieval`): ``dense`` needs :meth:`search`, ``text``
    #: :meth:`search_texts`, ``hybrid`` both.
    search_modes: ClassVar[tuple[str, ...]] = ("dense",)

    component_kind = "sink"

    def __init__(self, *, db: str, table: str, **options: Any):
        self.db = db
        self.table = table
        self.options = self.parse_options(options)

    def check(self) -> None:
        """Raise :class:`indexer.errors.ConfigError` when the destination cannot be written."""

    def open(self, model: ModelInfo, meta: dict[str, Any]) -> None:
        """Prepare the destination for vectors of ``model``; refuse a table that holds another model's vectors."""

    @abstractmethod
    def write_shard(self, shard: str, batches: Iterable[Any]) -> int:
        """Replace the rows of ``shard`` with ``batches``; return the number of rows written."""

    def close(self) -> None:
        """Commit and release; build indexes that pay off at the table's size."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def scan(self, columns: Sequence[str] | None = None, *, filter: str | None = None,
             batch_rows: int = 4096) -> Iterator[Any]:
        """Read the stored rows back: Arrow record batches (``indexer.rows.embedded_schema``'s columns, or just
        ``columns``) of at most ``batch_rows`` rows, in the store's order, of the rows matching ``filter`` (a SQL
        predicate, as ``--where`` takes) or all. Publishing and fine-tuning read a table through this, so they
        work on any sink that implements it."""
        raise NotImplementedError(f"sink {type(self).__name__} cannot be read back")

    def search(self, vectors: Any, k: int = 10, *, filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` hits per query vector, best first."""
        raise NotImplementedError(f"sink {type(self).__name__} cannot search")

    def search_queries(self, queries: Sequence[str], embedder: "Embedder", k: int = 10, *,
                       filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` hits per query text, best first: the queries embedded by ``embedder`` (the table's), then
        :meth:`search`. A sink whose store embeds queries itself (a PLAID index) overrides this."""
        return self.search(embedder.embed_queries(queries), k, filter=filter)

    def available_modes(self) -> tuple[str, ...]:
        """The modes this table can be searched in now (a subset of :attr:`search_modes`: text search may need an
        index the table does not have yet)."""
        return self.search_modes

    def search_texts(self, queries: Sequence[str], k: int = 10, *, filter: str | None = None) -> list[list[Hit]]:
        """Top ``k`` hits per query by full-text relevance (e.g. BM25), best first."""
        raise NotImplementedError(f"sink {type(self).__name__} has no full-text search")

    def check_filter(self, filter: str) -> None:
        """Raise :class:`indexer.errors.ConfigError`, naming the filterable fields, when ``filter`` cannot be
        evaluated here; called before any search."""

    def filterable_columns(self) -> list[str]:
        """The columns a filter may name (metadata fields first)."""
        return []

    def filterable_types(self) -> dict[str, str]:
        """Each filterable column and the kind of value it holds: ``string``, ``int``, ``float``, ``bool`` or
        ``strings`` (a list of strings), for callers that build a filter from typed values and quote them
        themselves (``indexer serve``). A sink that knows no types says every column holds strings."""
        return dict.fromkeys(self.filterable_columns(), "string")

    def count(self) -> int:
        """How many rows the sink holds; by default counted through :meth:`scan`."""
        return sum(batch.num_rows for batch in self.scan(["id"]))

    def tables(self) -> list[dict[str, Any]]:
        """Tables at this destination with their recorded metadata (for ``indexer info``)."""
        return []


# --------------------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------------------


class Executor(Component):
    """Schedules shard jobs, and nothing else. It knows nothing about what a job does: it calls ``fn(job)`` for
    each job somewhere (this process, a pool, threads, a container) and yields the results as they finish, in any
    order; when a job fails, it yields what finished and then raises (:func:`shard_failure` words the error).

    ``fn`` and the jobs are picklable (``fn`` is a module-level function). Whatever a job needs travels in it: the
    pipeline writes the config its workers plan with, and, where they keep the work directory elsewhere
    (:meth:`work_location`), sends the files a job reads and fetches what it wrote. An executor names no
    embedder: it declares :attr:`remote`, and the pipeline pairs that with :attr:`Embedder.portable`.
    """

    #: Whether its workers run where none of this machine's files are (containers, another cluster): the pipeline
    #: then refuses, before any work, an embedder that is not :attr:`Embedder.portable`.
    remote: ClassVar[bool] = False
    component_kind = "executor"

    def __init__(self, *, workers: int | None = None, **options: Any):
        self.workers = workers
        self.options = self.parse_options(options)

    def check(self) -> None:
        """Raise :class:`indexer.errors.ConfigError` when this executor cannot run here. Subclasses extend it."""
        from indexer.errors import ConfigError

        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(f"--workers must be at least 1 (got {self.workers!r})")

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        """Run ``fn`` on every job; yield results as they complete."""

    def work_location(self) -> Location | None:
        """Where the workers keep the work directory when they cannot see this machine's (an
        :class:`indexer.state.Location`, e.g. a Modal Volume); called once per run, before :meth:`map`. None (the
        default): they share this machine's files, and jobs run against the run's own work directory."""
        return None

    def close(self) -> None:
        """Release what the executor holds (worker processes, connections); the pipeline calls it after a run."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def usable_cores() -> list[int]:
    """The CPU cores this process may run on."""
    import os

    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return list(range(os.cpu_count() or 1))


def shard_failure(job: Any, exc: BaseException, finished: int, total: int, where: str, *,
                  shard: str | None = None) -> BaseException:
    """The error an executor raises when a job failed elsewhere: which shard (``shard`` says it when the job is not
    known), why, and what is safe (chained to the cause, whose remote traceback concurrent.futures and Modal
    attach)."""
    from concurrent.futures.process import BrokenProcessPool

    from indexer.errors import IndexerError

    shard = shard or getattr(getattr(job, "shard", None), "key", None) or repr(job)[:80]
    if isinstance(exc, BrokenProcessPool):
        why = "the worker process died (killed by the OS, out of memory?)"
    else:
        why = f"{type(exc).__name__}: {exc}"
    message = (f"shard {shard} failed in {where}: {why}. {finished} of {total} shard(s) finished in this run and are "
               "recorded; run the same command again to redo only the rest")
    cls = type(exc) if isinstance(exc, IndexerError) else RuntimeError
    try:
        error = cls(message)
    except TypeError:  # an IndexerError subclass with its own constructor
        error = IndexerError(message)
    error.__cause__ = exc
    return error


# --------------------------------------------------------------------------------------------------------------
# Feedback stores
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FeedbackPair:
    query: str
    positive_id: str  # a chunk id or a document id
    positive_text: str | None = None
    negative_ids: list[str] = field(default_factory=list)
    relevance: float = 1.0
    source: str = "api"
    timestamp: float = 0.0
    query_id: str | None = None


class FeedbackStore(Component):
    """Keeps (query → relevant passage) pairs for fine-tuning."""

    component_kind = "feedback_store"

    def __init__(self, *, db: str, **options: Any):
        self.db = db
        self.options = self.parse_options(options)

    @abstractmethod
    def add(self, pairs: Iterable[FeedbackPair]) -> int:
        """Store pairs, dropping exact duplicates; return how many were new."""

    @abstractmethod
    def pairs(self) -> Iterator[FeedbackPair]:
        """Every stored pair."""

    def compact(self) -> None:
        """Fold many small writes into fewer files, for stores that can; by default nothing to do."""
