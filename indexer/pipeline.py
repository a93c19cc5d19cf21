"""The pipeline: source → chunker → embedder → sinks, shard by shard, resumable.

Work is split in two so that any executor can run it:

* :func:`prepare_shard` (runs wherever the executor puts it) is the whole shard job, one function of a
  :class:`ShardJob` (the plan's picklable settings and one shard): it reads the shard, chunks it, embeds what is
  not embedded yet anywhere in the run state, committing new vectors in checkpoints as it goes, and writes the
  shard's chunk and vector files into the work directory, atomically;
* :func:`build` (runs in the calling process) plans the run, hands shard jobs to the executor, and for each
  finished shard, in plan order, replaces the shard's rows in every sink and then writes the shard's completion
  record.

An executor only schedules (:class:`indexer.components.Executor`). When its workers cannot see this machine's
files, it says where they keep the work directory (a :class:`indexer.state.Location`), and :func:`run_jobs` —
not the executor — writes the config they plan with, sends the files a job reads and fetches what it wrote:
the work directory is a location the pipeline reads and writes, so a new executor (Ray, Slurm) writes none of
that again. Copying whole files between two work directories was kept over running the whole run against the
location: this machine's work directory stays the one place that completion records, resume and the sinks read.

A kill at any moment leaves whole files only; the next run redoes the shards without a completion record, takes
the vectors of the checkpoints back (so a kill loses at most one checkpoint of one shard), and the sinks'
per-shard replace makes the redo idempotent.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from indexer.components import Chunker, Embedder, Executor, FieldMapping, Sink, Source
from indexer.config import DEFAULT_MODEL, BuildConfig, parse_shard_size
from indexer.errors import ConfigError, IndexerError
from indexer.memory import limit_malloc_arenas, return_freed_memory
from indexer.options import check_build_options
from indexer.plugins import Host, get_host
from indexer.progress import progress_bar
from indexer.state import (Location, StoredVectors, WorkDir, atomic_path, atomic_write_text, new_run_id, short_hash,
                           vector_schema)
from indexer.summary import RunSummary, ShardResult
from indexer.rows import CHUNK_SCHEMA, batch_to_chunks, chunks_to_batch, multivector_array, stream_parquet
from indexer.types import BadRecord, Chunk, Document, ModelInfo, Shard


@dataclass
class Plan:
    """Everything a run needs, built and checked before any work starts."""

    config: BuildConfig
    source: Source | None
    chunker: Chunker | None
    embedder: Embedder
    model: ModelInfo
    chunkset: str
    table: str
    work: WorkDir
    sink_names: list[str] = field(default_factory=list)
    gate: dict[str, Any] | None = None  # what the embedder measured on the corpus to settle its choices

    @property
    def model_key(self) -> str:
        return self.model.slug()

    def table_meta(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "model": dataclasses.asdict(self.model),
            "embedder": {
                "name": cfg.embedder,
                "model": cfg.model,
                "options": {"device": cfg.device, "precision": cfg.precision, "batch_tokens": self.embedder.token_budget(),
                            **cfg.component_options("embedder")},
                "gate": self.gate,
            },
            "chunking": self.chunker.settings() if self.chunker else (self.work.chunkset_info(self.chunkset) or {}).get("chunking"),
            "source": self.source.identity() if self.source else (self.work.chunkset_info(self.chunkset) or {}).get("source"),
            "chunkset": self.chunkset,
            "work_dir": str(self.work.root),
        }


@dataclass
class ShardJob:
    """One shard's work; picklable, so an executor can send it to another process."""

    config: BuildConfig
    shard: Shard
    from_chunks: bool = False  # re-embed stored chunks instead of reading the source
    run: str = ""  # the run it belongs to: names its checkpoints, scopes the per-process run-state lookup
    # The chunk set and vector set keys the planning process computed ({"chunkset", "model"}), for a worker that
    # plans the job again elsewhere: one that gets other keys (another version of the input or of the tokenizer)
    # would write files the run never reads, so it stops instead.
    expected: dict[str, str] | None = None


# -- planning ------------------------------------------------------------------------------------------------


def detect_source(uri: str, host: Host) -> str:
    registry = host.registry("source")
    matches = [name for name in registry.names() if registry.get(name).can_read(uri)]
    if not matches:
        raise ConfigError(
            f"no source can read {uri!r}: is the path right? Name a source with --source "
            f"({', '.join(registry.names()) or 'none installed'})"
        )
    return matches[0]


def check_options(config: BuildConfig, host: Host, *, with_source: bool = True) -> None:
    """Every ``--option`` table parsed against its component's declaration, before any component is made: an
    unknown or ill-typed option fails here, naming the component's known options."""
    if config.shard_size is not None:
        parse_shard_size(config.shard_size)  # --shard-size reaches the source as an option: checked before any work
    if not config.options:
        return
    names = {"embedder": ("embedder", config.embedder), "chunker": ("chunker", config.chunker),
             "executor": ("executor", config.executor), **{name: ("sink", name) for name in config.sinks}}
    if with_source and config.source:
        names["source"] = ("source", config.source_type or detect_source(config.source, host))
    check_build_options(config.options, {table: (kind, name, host.component(kind, name))
                                         for table, (kind, name) in names.items()},
                        elsewhere=host.registry("sink").names())


def make_embedder(config: BuildConfig, host: Host) -> Embedder:
    cls = host.component("embedder", config.embedder)
    if config.batch_tokens is not None and config.batch_tokens < 1:
        raise ConfigError(f"--batch-tokens must be at least 1 (got {config.batch_tokens})")
    return cls(config.model, device=config.device, precision=config.precision, batch_tokens=config.batch_tokens,
               **config.component_options("embedder"))


def make_source(config: BuildConfig, host: Host) -> Source:
    """The configured source (named, or detected from the input), with the configured field mapping, checked."""
    mapping = FieldMapping(
        id_field=config.id_field, text_field=config.text_field, title_field=config.title_field,
        metadata_fields=list(config.metadata_fields), max_doc_chars=config.max_doc_chars,
    )
    name = config.source_type or detect_source(config.source, host)
    options = config.component_options("source")
    if config.shard_size is not None:
        options["shard_size"] = config.shard_size
    source = host.component("source", name)(config.source, mapping=mapping, **options)
    source.check()
    return source


def make_sinks(plan: Plan, host: Host) -> list[Sink]:
    return [host.component("sink", name)(db=plan.config.db, table=plan.table, **plan.config.component_options(name))
            for name in plan.sink_names]


def apply_late_interaction(config: BuildConfig, host: Host) -> BuildConfig:
    """``--late-interaction NAME``: embed with the NAME embedder (its ``default_model`` unless --model was given)
    into the NAME sink (unless --sink was given)."""
    name = config.late_interaction
    if not name:
        return config
    cls = host.component("embedder", name)
    if cls.kind != "multivector":
        raise ConfigError(f"--late-interaction {name}: embedder {name!r} makes {cls.kind} vectors, not per-token ones")
    if config.embedder not in (BuildConfig.embedder, name):
        raise ConfigError(f"--late-interaction {name} embeds with {name!r}; leave out --embedder {config.embedder}")
    host.component("sink", name)
    changes: dict[str, Any] = {"embedder": name, "late_interaction": None}
    if config.sinks == BuildConfig().sinks:
        changes["sinks"] = [name]
    if config.model == DEFAULT_MODEL and cls.default_model:
        changes["model"] = cls.default_model
    return config.replace(**changes)


def check_executor_runs_embedder(config: BuildConfig, host: Host) -> None:
    """A ``remote`` executor's workers have none of this machine's files: refuse an embedder that needs them
    (:attr:`Embedder.portable`), naming the ones that would do, before anything is loaded or run."""
    executor = host.component("executor", config.executor)
    embedders = host.registry("embedder")
    if not executor.remote or embedders.get(config.embedder).portable:
        return
    portable = [n for n in embedders.names() if embedders.get(n).portable]
    hint = " or ".join(f"--embedder {n} ({embedders.get(n).description or 'no description'})" for n in portable)
    raise ConfigError(
        f"the {config.embedder} embedder cannot run where the {config.executor} executor runs shards (its workers "
        "hold no torch and no model files from this machine): "
        + (f"build with {hint}" if portable else "no installed embedder can; build with another --executor")
    )


def plan_build(config: BuildConfig, host: Host | None = None, *, from_chunkset: str | None = None) -> Plan:
    """Build and check every component. Raises :class:`ConfigError` before any work when something is wrong."""
    limit_malloc_arenas()  # before the model and the tokenizer start threads, in any process that plans work
    host = host or get_host()
    config = apply_late_interaction(config, host)
    for name in config.sinks:
        host.component("sink", name)  # unknown names fail here, listing the known ones
    host.component("executor", config.executor)
    check_executor_runs_embedder(config, host)
    check_options(config, host, with_source=from_chunkset is None)
    embedder = make_embedder(config, host)
    embedder.check()
    source = chunker = None
    work = WorkDir(config.work_path)
    if from_chunkset is None:
        if not config.source:
            raise ConfigError("no source given: pass a path or dataset name (indexer build SOURCE)")
        source = make_source(config, host)
        limit = embedder.content_token_limit()
        max_tokens = config.max_tokens or limit
        if max_tokens > limit and config.chunker == "token":
            raise ConfigError(f"--max-tokens {max_tokens} is more than model {config.model} takes ({limit} content tokens)")
        chunker = host.component("chunker", config.chunker)(
            embedder.tokenizer(), max_tokens=max_tokens, overlap=min(config.overlap, max_tokens - 1),
            min_tokens=min(config.min_tokens, max_tokens), boundaries=config.boundaries,
            tokenizer_key=embedder.tokenizer_key(), **config.component_options("chunker"),
        )
        chunker.check()
        chunkset = short_hash(source.identity(), dataclasses.asdict(source.mapping), chunker.settings())
    else:
        chunkset = from_chunkset
        if work.chunkset_info(chunkset) is None:
            raise ConfigError(f"no stored chunks {chunkset!r} in {work.root}; build the index first")
    model = embedder.info
    plan = Plan(config, source, chunker, embedder, model, chunkset, config.table or model.slug(), work, list(config.sinks))
    for sink in make_sinks(plan, host):
        sink.check()
    host.component("executor", config.executor)(workers=config.workers, **config.component_options("executor")).check()
    return plan


# -- one shard -----------------------------------------------------------------------------------------------

_PLANS: dict[str, Plan] = {}  # per process: components stay loaded from one shard to the next
# Guards the per-process caches (_PLANS, _RUN_STATE): an executor may run shard jobs in threads of one process.
_CACHE_LOCK = threading.RLock()


def _plan_key(config: BuildConfig, from_chunkset: str | None) -> str:
    return json.dumps([dataclasses.asdict(config), from_chunkset], sort_keys=True, default=str)


def plan_for_job(job: ShardJob) -> Plan:
    chunkset = job.shard.spec.get("chunkset") if job.from_chunks else None
    key = _plan_key(job.config, chunkset)
    with _CACHE_LOCK:
        if key not in _PLANS:
            _PLANS[key] = plan_build(job.config, from_chunkset=chunkset)
        return _PLANS[key]


def settle_embedder(plan: Plan, jobs: list[ShardJob]) -> Plan:
    """Let the embedder make its corpus-dependent choices (:meth:`Embedder.settle`) on a sample of the corpus,
    before any work. When it decides something, the returned plan's config names the precision it chose, so
    that every process that plans a job from that config, and every search of the table (which builds its
    embedder from the options recorded with it), embeds as this run does."""
    wanted = plan.embedder.sample_size()
    if not wanted or not jobs:
        return plan
    before = plan.work.table_info(plan.table) or {}
    previous = (before.get("embedder") or {}).get("gate")
    if (before.get("model") or {}).get("fingerprint") != plan.model.fingerprint:
        previous = None
    report = plan.embedder.settle(lambda: corpus_sample(plan, jobs, wanted), previous)
    if report is None:
        return plan
    model = plan.embedder.info
    config = plan.config.replace(precision=model.precision)
    settled = dataclasses.replace(plan, config=config, model=model, gate=report)
    _PLANS[_plan_key(config, plan.chunkset if jobs[0].from_chunks else None)] = settled
    return settled


def corpus_sample(plan: Plan, jobs: list[ShardJob], n: int) -> list:
    """``n`` chunks spread evenly over the first ``4 n`` chunks of the corpus (cut as the build cuts them):
    deterministic, and cheap however big the corpus is."""
    chunks = (c for job in jobs for block in _chunk_blocks(plan, job, ShardResult(shard=job.shard.key)) for c in block)
    pool = list(islice(chunks, 4 * n))
    return pool[:: max(1, len(pool) // n)][:n]


def _blocks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while block := list(islice(it, n)):
        yield block


def prepare_shard(job: ShardJob) -> ShardResult:
    """Chunk (or load stored chunks) and embed one shard into the work directory. Runs in any process."""
    result = _prepare_shard(job)
    return_freed_memory()  # after the shard's blocks and vectors are released
    return result


def _prepare_shard(job: ShardJob) -> ShardResult:
    plan = plan_for_job(job)
    got = {"chunkset": plan.chunkset, "model": plan.model_key}
    if job.expected is not None and got != job.expected:
        raise ConfigError(
            f"shard {job.shard.key}: this worker planned chunk set {got['chunkset']} / vector set {got['model']}, "
            f"but this run expects {job.expected['chunkset']} / {job.expected['model']}: the worker reads another "
            "version of the input or of the model's tokenizer"
        )
    shard, work, embedder = job.shard, plan.work, plan.embedder
    result = ShardResult(shard=shard.key, precision=plan.model.precision)
    chunk_path = work.chunk_file(plan.chunkset, shard.key)
    vector_path = work.vector_file(plan.model_key, plan.chunkset, shard.key)
    vschema = vector_schema(plan.model.dimension, plan.model.kind)
    t_read = t_embed = t_write = 0.0
    with ExitStack() as stack:
        bar = stack.enter_context(progress_bar(f"embedding {shard.key}", unit=" chunks", leave=False,
                                               enabled=plan.config.progress))
        vtmp = stack.enter_context(atomic_path(vector_path))
        # a re-embed leaves the stored chunks as they are
        chunk_writer = None if job.from_chunks else pq.ParquetWriter(stack.enter_context(atomic_path(chunk_path)), CHUNK_SCHEMA)
        vector_writer = pq.ParquetWriter(vtmp, vschema)
        # entered last, closed first: the file is let go of before the new one is renamed over it
        previous = stack.enter_context(work.previous_vectors(plan.model_key, plan.chunkset, shard.key))
        checkpoint = Checkpoint(plan, job, vschema)
        t0 = time.perf_counter()
        for chunks in _chunk_blocks(plan, job, result):
            t1 = time.perf_counter()
            t_read += t1 - t0
            known = _known_vectors(plan, job, chunks, previous)
            todo = [c for c in chunks if c.content_hash not in known]
            _embed_in_pieces(embedder, todo, known, checkpoint, bar)
            t2 = time.perf_counter()
            t_embed += t2 - t1
            result.chunks += len(chunks)
            result.tokens += sum(c.token_count for c in chunks)
            result.embedded_chunks += len(todo)
            result.embedded_tokens += sum(c.token_count for c in todo)
            result.reused_chunks += len(chunks) - len(todo)
            if chunk_writer is not None:
                chunk_writer.write_batch(chunks_to_batch(chunks, shard.key))
            vector_writer.write_batch(vector_batch(plan, chunks, [known[c.content_hash] for c in chunks], vschema))
            t0 = time.perf_counter()
            t_write += t0 - t2
        vector_writer.close()
        if chunk_writer is not None:
            chunk_writer.close()
        # The previous file may hold chunks that an edit moved into another shard of the file; kept until the run
        # ends, for that shard to find (closed first: a file that is open cannot be moved everywhere).
        previous.close()
        work.retire_vectors(plan.model_key, plan.chunkset, shard.key, job.run)
    checkpoint.discard()  # every vector in it is in the shard's file now
    if not job.from_chunks:
        record = {"fingerprint": shard.fingerprint, "documents": result.documents, "chunks": result.chunks,
                  "tokens": result.tokens, "bad": [dataclasses.asdict(b) for b in result.bad]}
        atomic_write_text(work.chunk_record_file(plan.chunkset, shard.key), json.dumps(record, sort_keys=True))
    result.seconds = {"read+chunk": t_read, "embed": t_embed, "write": t_write}
    return result


# per process: every vector of the run state as the run found it, for chunks a shard's own file lacks
_RUN_STATE: dict[str, StoredVectors] = {}


def _known_vectors(plan: Plan, job: ShardJob, chunks: list[Chunk], previous: StoredVectors) -> dict[str, Any]:
    """Content hash → vector of the chunks embedded before: by this shard's previous run, or anywhere in the run
    state (another shard of the file its chunks moved from, checkpoints of a killed run)."""
    hashes = list({c.content_hash for c in chunks})
    known = dict(zip(mine := [h for h in hashes if h in previous], previous.get(mine)))
    missing = [h for h in hashes if h not in known]
    if missing:
        # Built once per process and run, on the first miss, from the files there were then; a chunk embedded
        # later in this run is in no earlier run state, so nothing is lost by not looking again.
        key = f"{job.run}:{plan.work.root}:{plan.model_key}"
        with _CACHE_LOCK:
            if key not in _RUN_STATE:
                for stale in _RUN_STATE.values():
                    stale.close()
                _RUN_STATE.clear()
                _RUN_STATE[key] = plan.work.all_vectors(plan.model_key)
            everywhere = _RUN_STATE[key]
        found = [h for h in missing if h in everywhere]
        known.update(zip(found, everywhere.get(found)))
    return known


def _embed_in_pieces(embedder: Embedder, todo: list[Chunk], known: dict[str, Any], checkpoint: "Checkpoint",
                     bar: Any) -> None:
    """Embed ``todo`` into ``known``, a piece at a time, handing each piece to the checkpoint. The chunks are
    sorted by length first, so pieces batch as tightly as the whole would."""
    order = sorted(range(len(todo)), key=lambda i: -todo[i].token_count)
    for piece in _blocks(order, checkpoint.piece_chunks):
        chunks = [todo[i] for i in piece]
        vectors = embedder.embed(chunks, progress=bar.update)
        known.update((c.content_hash, vectors[j]) for j, c in enumerate(chunks))
        checkpoint.add(chunks, vectors)


class Checkpoint:
    """Commits a shard's new vectors to the run state in pieces (every ``checkpoint_chunks`` chunks or
    ``checkpoint_seconds`` seconds, whichever comes first), so that a kill loses at most one piece: the next run
    finds the pieces through :func:`_known_vectors` and embeds only the rest.

    Pieces go to the spare folder, one whole file each (written atomically), named by shard and run; once the
    shard's vector file is in place they are deleted.
    """

    def __init__(self, plan: Plan, job: ShardJob, schema: pa.Schema):
        self.plan, self.job, self.schema = plan, job, schema
        self.every = max(1, plan.config.checkpoint_chunks)
        self.seconds = plan.config.checkpoint_seconds
        # Embedded in pieces small enough for the time limit to be checked now and then, big enough to batch well.
        self.piece_chunks = min(self.every, 256)
        self.pending: list[tuple[Chunk, Any]] = []
        self.since = time.monotonic()
        self.written = 0

    def add(self, chunks: list[Chunk], vectors: Any) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending.extend(zip(chunks, vectors))
        if len(self.pending) >= self.every or time.monotonic() - self.since >= self.seconds:
            self.commit()

    def commit(self) -> None:
        if not self.pending:
            return
        plan = self.plan
        path = plan.work.checkpoint_file(plan.model_key, plan.chunkset, self.job.shard.key, self.job.run, self.written)
        chunks = [c for c, _ in self.pending]
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_batches(
                [vector_batch(plan, chunks, [v for _, v in self.pending], self.schema)]), tmp)
        self.written += 1
        self.pending = []

    def discard(self) -> None:
        plan = self.plan
        for path in plan.work.checkpoint_files(plan.model_key, plan.chunkset, self.job.shard.key, self.job.run):
            path.unlink(missing_ok=True)


def vector_batch(plan: Plan, chunks: list[Chunk], vectors: list[Any], schema: pa.Schema) -> pa.RecordBatch:
    """id, content_hash and vector of ``chunks``, as stored in vector and checkpoint files."""
    if plan.model.kind == "multivector":
        column = multivector_array(vectors, plan.model.dimension)
    else:
        flat = pa.array(_flatten(vectors), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, plan.model.dimension)
    return pa.RecordBatch.from_arrays(
        [pa.array([c.id for c in chunks]), pa.array([c.content_hash for c in chunks]), column], schema=schema)


def _flatten(vectors: list[Any]) -> Any:
    import numpy as np

    return np.asarray(vectors, dtype=np.float32).reshape(-1) if vectors else np.zeros(0, dtype=np.float32)


def _chunk_blocks(plan: Plan, job: ShardJob, result: ShardResult) -> Iterator[list]:
    """Blocks of chunks of one shard: cut from the source, or read back from the stored chunk set."""
    if job.from_chunks:
        stored = stream_parquet(plan.work.chunk_file(plan.chunkset, job.shard.key))
        for batch in stored.iter_batches(batch_size=plan.config.block_docs * 4):
            chunks = batch_to_chunks(batch)
            result.documents += len({c.doc_id for c in chunks})
            yield chunks
        return
    result.source_reads += 1
    assert plan.source is not None and plan.chunker is not None
    for block in _blocks(plan.source.read(job.shard), plan.config.block_docs):
        docs: list[Document] = []
        for item in block:
            (result.bad.append(item) if isinstance(item, BadRecord) else docs.append(item))
        chunks = list(plan.chunker.chunk_many(docs))
        with_chunks = {c.doc_id for c in chunks}
        for d in docs:
            if d.id not in with_chunks:
                result.bad.append(BadRecord(job.shard.key, d.id, "text has no tokens for this model's tokenizer"))
        result.documents += len(with_chunks)
        result.chunked_documents += len(docs)
        yield chunks


# -- the run -------------------------------------------------------------------------------------------------


def count_chunks(plan: Plan, shards: Iterable[Shard]) -> tuple[int, int, int]:
    """(documents, chunks, tokens) that ``shards`` of the plan's source make, cut exactly as a build cuts them;
    nothing is embedded. For estimates and benchmarks."""
    documents = chunks = tokens = 0
    for shard in shards:
        result = ShardResult(shard=shard.key)
        for block in _chunk_blocks(plan, ShardJob(plan.config, shard), result):
            chunks += len(block)
            tokens += sum(c.token_count for c in block)
        documents += result.documents
    return documents, chunks, tokens


def build(config: BuildConfig, host: Host | None = None) -> RunSummary:
    """Build (or bring up to date) the index for ``config``. Returns the run summary."""
    host = host or get_host()
    plan = plan_build(config, host)
    _PLANS[_plan_key(config, None)] = plan
    shards = plan.source.shards()
    if not shards:
        raise ConfigError(f"{config.source} holds no input files")
    plan = settle_embedder(plan, [ShardJob(config, s) for s in shards])
    jobs = [ShardJob(plan.config, s) for s in shards]
    return _run(plan, host, jobs, "build", current={s.key for s in shards})


def reembed(config: BuildConfig, from_table: str, host: Host | None = None) -> RunSummary:
    """Embed the chunks stored for ``from_table`` with ``config.model`` into a new table; reads no source."""
    host = host or get_host()
    work = WorkDir(config.work_path)
    info = work.table_info(from_table)
    if info is None:
        raise ConfigError(f"table {from_table!r} has no build record in {work.root}; build it first")
    chunkset = info["chunkset"]
    plan = plan_build(config, host, from_chunkset=chunkset)
    _PLANS[_plan_key(config, chunkset)] = plan
    shard_keys = work.chunkset_shards(chunkset)
    shards = [Shard(key, work.chunk_record(chunkset, key)["fingerprint"], {"chunkset": chunkset}) for key in shard_keys]
    plan = settle_embedder(plan, [ShardJob(config, s, from_chunks=True) for s in shards])
    jobs = [ShardJob(plan.config, s, from_chunks=True) for s in shards]
    return _run(plan, host, jobs, "reembed", current=set(shard_keys))


def _run(plan: Plan, host: Host, jobs: list[ShardJob], kind: str, current: set[str]) -> RunSummary:
    config, work = plan.config, plan.work
    summary = RunSummary(kind=kind, table=plan.table, model=plan.config.model, precision=plan.model.precision,
                         gate=plan.gate, shards=len(jobs))
    meta = plan.table_meta()
    sinks = make_sinks(plan, host)
    executor = host.component("executor", config.executor)(workers=config.workers, **config.component_options("executor"))

    def is_done(job: ShardJob) -> bool:
        rec = work.done_record(plan.table, job.shard.key)
        return bool(rec) and rec.get("fingerprint") == job.shard.fingerprint and rec.get("chunkset") == plan.chunkset \
            and rec.get("model") == plan.model.fingerprint and rec.get("sinks") == sorted(plan.sink_names)

    run = new_run_id()
    done = {j.shard.key for j in jobs if is_done(j)}
    todo = [dataclasses.replace(j, run=run) for j in jobs if j.shard.key not in done]
    summary.shards_skipped = len(done)
    try:
        with work.lock() as alone:
            if alone:  # no other run writes here now, so every temporary file is a killed run's
                summary.temporaries_removed = work.remove_temporaries()
            work.write_chunkset_info(plan.chunkset, {"source": meta["source"], "chunking": meta["chunking"]})
            work.write_table_info(plan.table, meta)
            for sink in sinks:
                sink.open(plan.model, meta)
            writer = InOrderWriter(plan, sinks, jobs, done, summary)
            run_bar, steps = _run_progress(todo, f"{kind} {plan.table}", config.progress)
            with executor, run_bar as bar:
                results = run_jobs(executor, plan, todo)
                while True:
                    try:
                        result = next(results, None)
                    except Exception:
                        writer.flush()  # a shard failed: what finished is kept, as a rerun would redo it
                        raise
                    if result is None:
                        break
                    summary.add(result)
                    writer.finished(result)
                    bar.update(steps[result.shard])
                # Shards done before are checked even when no shard ran: a removed file may have held the first
                # copy of a doc id that a later shard now keeps.
                writer.flush()
            for gone in sorted(set(work.done_shards(plan.table)) - current):
                for sink in sinks:
                    sink.write_shard(gone, [])
                work.forget_done(plan.table, gone)
                summary.shards_removed += 1
            work.clear_spare(plan.model_key, plan.chunkset)  # every shard is done: spare vectors are in shard files
        plan.embedder.release()
        return_freed_memory()  # sinks may build indexes over the whole table now
        for sink in sinks:
            sink.close()
    except IndexerError as exc:
        summary.error = str(exc)
        raise
    except BaseException as exc:
        summary.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary.finish()
        host.hook.run_finished(summary=summary)
    return summary


def run_jobs(executor: Executor, plan: Plan, jobs: list[ShardJob]) -> Iterator[ShardResult]:
    """:func:`prepare_shard` of every job, through ``executor``, with results as they finish.

    When the executor's workers keep the work directory elsewhere (:meth:`Executor.work_location`), this is where
    the jobs are made for them: planned with :func:`worker_config` and the keys they must reproduce, the files each
    reads there sent first (:func:`stage_work`), and the files it wrote fetched into this work directory before its
    result is yielded (:func:`fetch_results`), so that the sinks and completion records are written from here.
    """
    location = executor.work_location() if jobs else None
    if location is None:
        yield from executor.map(prepare_shard, jobs)
        return
    config = worker_config(plan.config, location)
    there = location.listing()
    sent = []
    for job in jobs:
        stage_work(location, there, plan, job)
        sent.append(dataclasses.replace(job, config=config,
                                        expected={"chunkset": plan.chunkset, "model": plan.model_key}))
    mine = {job.shard.key: job for job in jobs}
    for result in executor.map(prepare_shard, sent):
        fetch_results(location, plan, mine[result.shard])
        yield result


def worker_config(config: BuildConfig, location: Location) -> BuildConfig:
    """The config that workers elsewhere plan a job with: the work directory as they see it, no sinks (this process
    writes them), no executor of their own, no progress bars, and a local source by its absolute path (their
    executor makes the input appear there, or they share this machine's file system)."""
    import glob
    import os

    source = config.source
    if source and glob.glob(os.path.expanduser(source)):
        source = os.path.abspath(os.path.expanduser(source))
    options = {kind: table for kind, table in config.options.items() if kind != "executor"}  # theirs is "local"
    return config.replace(work_dir=location.path, sinks=[], executor="local", workers=None, progress=False,
                          source=source, options=options)


def _there(plan: Plan, path: Path) -> str:
    return path.relative_to(plan.work.root).as_posix()


def stage_work(location: Location, there: set[str], plan: Plan, job: ShardJob) -> None:
    """Send what a shard job reads from the work directory and ``location`` lacks (``there`` lists what it holds,
    and is updated): the stored chunks of a re-embed, and the shard's previous vectors (reused for unchanged
    chunks)."""
    work, key = plan.work, job.shard.key
    wanted = [work.vector_file(plan.model_key, plan.chunkset, key)]
    if job.from_chunks:
        wanted += [work.chunk_file(plan.chunkset, key), work.chunk_record_file(plan.chunkset, key),
                   work.chunkset_info_file(plan.chunkset)]
    todo = [(p, _there(plan, p)) for p in wanted if p.exists() and _there(plan, p) not in there]
    location.upload(todo)
    there.update(rel for _, rel in todo)


def fetch_results(location: Location, plan: Plan, job: ShardJob) -> None:
    """Copy a finished shard's files from ``location`` into this work directory (each whole or not at all)."""
    work, key = plan.work, job.shard.key
    files = [work.vector_file(plan.model_key, plan.chunkset, key)]
    if not job.from_chunks:
        files += [work.chunk_file(plan.chunkset, key), work.chunk_record_file(plan.chunkset, key)]
    for path in files:
        with atomic_path(path) as tmp:
            location.download(_there(plan, path), tmp)


def _run_progress(todo: list[ShardJob], desc: str, enabled: bool) -> tuple[Any, dict[str, int]]:
    """The run's bar and how far each shard moves it: bytes of input when every shard's size is known (so the ETA
    follows the input, not the shard count), else shards. One shard has its own bar (embedding) and needs no
    second."""
    by_bytes = all(j.shard.size for j in todo)
    steps = {j.shard.key: j.shard.size if by_bytes else 1 for j in todo}
    bar = progress_bar(desc, total=sum(steps.values()), unit="B" if by_bytes else "shard",
                       enabled=enabled and len(todo) > 1)
    return bar, steps


class InOrderWriter:
    """Writes finished shards into the sinks in plan order, whatever order the executor finishes them in, so
    that a document id found in two shards is kept where it comes first, as within a file.

    A shard's rows are written when every shard before it is written or was done already; then its completion
    record. A kill loses nothing but the writes still waiting: those shards have no completion record, so the
    next run prepares them again (their vectors come back from their own files). When a shard fails, the ones
    after it that finished are written all the same (:meth:`flush`): the rerun writes the failed one and then
    checks theirs again (:meth:`_recheck`). Doc ids are remembered as Python hashes (one int per document, for
    this run only); a hash seen before is confirmed against the stored doc ids of the shards written before it.
    """

    def __init__(self, plan: Plan, sinks: list[Sink], jobs: list[ShardJob], done: set[str], summary: RunSummary):
        self.plan, self.sinks, self.jobs, self.done, self.summary = plan, sinks, jobs, done, summary
        self.fingerprints = {j.shard.key: j.shard.fingerprint for j in jobs}
        self.ready: dict[str, ShardResult] = {}
        self.next = 0  # index into jobs of the first shard not written
        self.seen: set[int] = set()
        self.held: list[str] = []  # shards in the sinks, in the order their doc ids went into seen

    def finished(self, result: ShardResult) -> None:
        self.ready[result.shard] = result
        self._advance(past_gaps=False)

    def flush(self) -> None:
        """The run failed: write every shard that finished, past those that did not."""
        self._advance(past_gaps=True)

    def _advance(self, past_gaps: bool) -> None:
        while self.next < len(self.jobs):
            key = self.jobs[self.next].shard.key
            if key in self.done:
                self._recheck(key)
            elif key in self.ready:
                self._write(self.ready.pop(key))
            elif not past_gaps:
                return
            self.next += 1

    def _duplicates(self, shard: str) -> dict[str, str]:
        """Doc ids of ``shard`` that an earlier shard holds (id → that shard); remembers the others."""
        work, chunkset = self.plan.work, self.plan.chunkset
        try:
            ids = pq.read_table(work.chunk_file(chunkset, shard), columns=["doc_id"]).column(0).unique().to_pylist()
        except FileNotFoundError:
            return {}
        candidates = {d for d in ids if hash(d) in self.seen}
        self.seen.update(hash(d) for d in ids)
        found: dict[str, str] = {}
        for earlier in self.held if candidates else []:
            theirs = pq.read_table(work.chunk_file(chunkset, earlier), columns=["doc_id"]).column(0)
            for d in candidates.intersection(theirs.unique().to_pylist()):
                found.setdefault(d, earlier)
        self.held.append(shard)
        return found

    def _rows(self, shard: str, duplicates: dict[str, str]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        plan = self.plan
        drop = pa.array(sorted(duplicates), type=pa.string())
        for batch in plan.work.embedded_batches(plan.model_key, plan.chunkset, shard):
            yield batch.filter(pc.invert(pc.is_in(batch.column("doc_id"), value_set=drop))) if duplicates else batch

    def _report(self, shard: str, duplicates: dict[str, str]) -> None:
        self.summary.bad.extend(BadRecord(shard, d, f"duplicate id {d!r} (first in shard {first}); kept the first")
                                for d, first in sorted(duplicates.items()))

    def _write(self, result: ShardResult) -> None:
        plan, shard = self.plan, result.shard
        duplicates = self._duplicates(shard)
        self._report(shard, duplicates)
        t0 = time.perf_counter()
        for sink in self.sinks:
            self.summary.rows_written += sink.write_shard(shard, self._rows(shard, duplicates))
        self.summary.seconds["sink"] += time.perf_counter() - t0
        plan.work.mark_done(plan.table, shard, {
            "fingerprint": self.fingerprints[shard],
            "chunkset": plan.chunkset, "model": plan.model.fingerprint, "chunks": result.chunks,
            "sinks": sorted(plan.sink_names),  # a sink added later must still receive every shard
            "duplicates": short_hash(sorted(duplicates)) if duplicates else "",
        })

    def _recheck(self, shard: str) -> None:
        """A shard done in an earlier run: unchanged itself, but a shard before it may have gained or lost one of
        its doc ids since, and then its rows are written again without (or with) that document."""
        plan = self.plan
        duplicates = self._duplicates(shard)
        tag = short_hash(sorted(duplicates)) if duplicates else ""
        record = plan.work.done_record(plan.table, shard) or {}
        if record.get("duplicates", "") == tag:
            return
        self._report(shard, duplicates)
        for sink in self.sinks:
            self.summary.rows_written += sink.write_shard(shard, self._rows(shard, duplicates))
        plan.work.mark_done(plan.table, shard, {**record, "duplicates": tag})
