"""Index size and memory of a late-interaction index, estimated from chunk and token counts before any work.

The figures follow what colbert-ai does (``CollectionIndexer``, ``ResidualCodec``, ``IndexLoader``) with the
settings RAGatouille picks:

* every token of a chunk is one ``dim``-vector (plus ColBERT's [CLS], [D] and [SEP]; punctuation is masked out,
  so token counts are an upper bound);
* PLAID keeps, per token, a 4-byte centroid code and a residual of ``dim * nbits / 8`` bytes, with
  ``nbits`` the sink's setting (by default 8 below 10,000 passages, else RAGatouille's 2), plus an inverted file of at most one
  4-byte pid per token and ``2**floor(log2(16 * sqrt(tokens)))`` centroids;
* building samples ``16 * sqrt(120 * passages)`` passages for k-means, holds one encoding chunk (up to 25,000
  passages) uncompressed, and sorts every token's code when it writes the inverted file; vectors handed over from
  the embedder are held uncompressed until PLAID has compressed them;
* below 75,000 passages RAGatouille clusters with fast-pytorch-kmeans unless told to use faiss, which holds about
  three ``sample tokens x centroids`` float32 matrices (measured: 10.3 GB peak for the 2,000-document demo corpus,
  201,693 tokens and 4,096 centroids; the estimate says 9.9 GB); faiss clusters in blocks;
* searching loads every code and residual into memory (into GPU memory when it searches on a GPU);
* a LanceDB multivector table (and the work directory's vector files) keep every token as ``dim`` float32s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from indexer.errors import ConfigError

from indexer_colbert.embedder import DOC_SPECIAL_TOKENS

GiB = 1024**3
ENCODE_CHUNK_PASSAGES = 25_000
TORCH_KMEANS_BELOW = 75_000  # passages; RAGatouille's switch between fast-pytorch-kmeans and faiss
COLBERTV2_BYTES = 440 * 1024**2


@dataclass(frozen=True)
class IndexEstimate:
    passages: int
    tokens: int
    dim: int
    nbits: int
    partitions: int
    plaid_bytes: int  # on disk, and in memory when searching
    multivector_bytes: int  # LanceDB multivector table / work-directory vector files (float32)
    build_ram_bytes: int  # peak host memory while building the PLAID index
    build_gpu_bytes: int  # peak GPU memory while encoding and clustering on a GPU
    search_ram_bytes: int

    def render(self) -> str:
        return (f"{self.passages:,} chunks, {self.tokens:,} tokens x {self.dim} dims\n"
                f"  PLAID index        {_size(self.plaid_bytes)} ({self.nbits}-bit residuals, "
                f"{self.partitions:,} centroids; ~{self.multivector_bytes / max(1, self.plaid_bytes):.0f}x smaller "
                "than float32)\n"
                f"  multivector table  {_size(self.multivector_bytes)} (float32 per token: LanceDB "
                "lancedb-multivector sink, and the work directory's vector files)\n"
                f"  building           {_size(self.build_ram_bytes)} RAM, {_size(self.build_gpu_bytes)} GPU memory\n"
                f"  searching          {_size(self.search_ram_bytes)} RAM (GPU memory when searching on a GPU)")

    def problems(self, ram_bytes: int | None, gpu_bytes: int | None = None, *,
                 where: str = "this machine") -> list[str]:
        """What does not fit in ``ram_bytes`` of memory and ``gpu_bytes`` of GPU memory (None: not checked)."""
        out = []
        if ram_bytes is not None and self.build_ram_bytes > ram_bytes:
            out.append(f"building needs about {_size(self.build_ram_bytes)} of memory; {where} has "
                       f"{_size(ram_bytes)} available")
        if gpu_bytes is not None and self.build_gpu_bytes > gpu_bytes:
            out.append(f"encoding and clustering need about {_size(self.build_gpu_bytes)} of GPU memory; "
                       f"{where} has {_size(gpu_bytes)}")
        return out

    def check_fits(self, ram_bytes: int | None, gpu_bytes: int | None = None, *, where: str = "this machine") -> None:
        """Raise :class:`ConfigError` saying what to change when the index will not fit."""
        problems = self.problems(ram_bytes, gpu_bytes, where=where)
        if problems:
            raise ConfigError(
                f"this corpus will not fit: {'; '.join(problems)}.\n{self.render()}\n"
                "Index fewer documents per build (add the rest later, PLAID indexes take additions), let RAGatouille "
                "encode the texts itself instead of holding the embedder's vectors (--option colbert.reuse_vectors="
                "false), cluster with faiss (--option colbert.use_faiss=true), use a machine with more memory (the Modal A100 function: `modal run -m "
                "indexer_colbert.modal_app`), or shorten chunks (--max-tokens)."
            )


NBITS = (1, 2, 4, 8)


def parse_nbits(value: Any) -> int | None:
    """The colbert sink's ``nbits`` option: None for ``auto``, else one of :data:`NBITS`."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        bits = int(str(value).strip())
    except ValueError:
        bits = 0
    if bits not in NBITS:
        raise ConfigError(f"colbert option nbits must be auto or one of {', '.join(map(str, NBITS))} (got {value!r})")
    return bits


def residual_bits(passages: int, nbits: int | None = None) -> int:
    """Bits per residual dimension of a PLAID index of ``passages`` chunks: ``nbits``, or by default 8 below
    10,000 chunks and 2 from there.

    RAGatouille picks 4 below 10,000 and 2 above. Below 10,000 chunks an index is small either way (8 bits: 132
    bytes per token at 128 dims, against 68), and 4-bit residuals cost rankings: see the agreement table in
    docs/colbert.md (``scripts/check_colbert_agreement.py --sweep``)."""
    if nbits is not None:
        return nbits
    return 8 if passages < 10_000 else 2


def estimate(passages: int, tokens: int, dim: int, *, added_passages: int | None = None,
             added_tokens: int | None = None, model_bytes: int = COLBERTV2_BYTES,
             use_faiss: bool = False, nbits: int | None = None) -> IndexEstimate:
    """The estimate for an index of ``passages`` chunks holding ``tokens`` content tokens in all.

    ``added_*``: the part of it whose vectors come from the embedder in this build (all of it by default): they
    are held uncompressed until PLAID has compressed them.
    """
    passages = max(0, int(passages))
    total = int(tokens) + DOC_SPECIAL_TOKENS * passages
    added = total if added_tokens is None else int(added_tokens) + DOC_SPECIAL_TOKENS * int(added_passages or 0)
    nbits = residual_bits(passages, nbits)
    partitions = 2 ** int(math.floor(math.log2(16 * math.sqrt(total)))) if total else 0
    avg = total / passages if passages else 0
    per_token_code = 4 + dim * nbits // 8
    plaid = total * per_token_code + total * 4 + partitions * dim * 4
    float32 = total * dim * 4
    sample_tokens = min(passages, 1 + int(16 * math.sqrt(120 * passages))) * avg
    chunk_tokens = min(passages, ENCODE_CHUNK_PASSAGES) * avg
    kmeans = sample_tokens * dim * 4
    if passages < TORCH_KMEANS_BELOW and not use_faiss:
        kmeans += 3 * min(sample_tokens, partitions * 256) * partitions * 4
    build_ram = int(model_bytes + added * dim * 4 + kmeans + chunk_tokens * dim * 4 + total * 4 * 3 + plaid)
    # What a GPU build holds there: the model (twice: embedder and indexer), k-means on the sample, one fp16
    # encoding chunk; the codec compresses batch by batch.
    build_gpu = int(model_bytes * 2 + kmeans + chunk_tokens * dim * 2)
    search_ram = int(model_bytes + plaid)
    return IndexEstimate(passages, total, dim, nbits, partitions, int(plaid), int(float32), build_ram, build_gpu,
                         search_ram)


def available_memory() -> tuple[int, int | None]:
    """(available RAM, free GPU memory or None) for this process: the machine's available memory, or less when a
    cgroup (a container's memory limit) leaves less."""
    import psutil

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = int(torch.cuda.mem_get_info()[0])
    except Exception:  # no usable CUDA: nothing to check there
        gpu = None
    ram = int(psutil.virtual_memory().available)
    room = _cgroup_room()
    return (ram if room is None else min(ram, room)), gpu


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup (v2) may still allocate; None without a limit or a cgroup file system."""
    from pathlib import Path

    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        return None


def _size(n: float) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def estimate_source(config: Any) -> IndexEstimate:
    """Read and chunk ``config.source`` as a build would (tokenising only, no encoding) and estimate its index."""
    from indexer.pipeline import count_chunks, plan_build

    from indexer_colbert.plaid import PLAIDSink

    plan = plan_build(config)
    sink = PLAIDSink(db=config.db, table="estimate", **config.component_options("colbert"))
    reuse, use_faiss = sink.reuse_vectors, sink.use_faiss
    _, passages, tokens = count_chunks(plan, plan.source.shards())
    weights = sum(f.stat().st_size for f in plan.embedder.path.iterdir() if f.suffix in (".safetensors", ".bin"))
    return estimate(passages, tokens, plan.model.dimension, added_passages=passages if reuse else 0,
                    added_tokens=tokens if reuse else 0, model_bytes=weights or COLBERTV2_BYTES, use_faiss=use_faiss,
                    nbits=sink.nbits)
