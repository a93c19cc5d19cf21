"""The retrieval-quality gate that decides whether ``precision="auto"`` may embed a corpus in int8.

A cosine threshold says little about search: int8 vectors sit at cosine 0.99 from fp32 and still rank the same
documents first, or not, depending on how close the corpus's documents are to one another. So the gate searches
a sample of the corpus being built, with queries drawn from that sample (a sentence of a chunk), once with fp32
vectors and once with int8 ones, and passes when the two top-10 lists agree. It runs once per build, before any
work, in the process that plans it; the decision is recorded with the table and in the run summary.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from indexer.types import Chunk

SAMPLE_CHUNKS = 300  # documents of the sample search: a few seconds of fp32 and int8 embedding on 2 cores
QUERIES = 100
TOP_K = 10
# Mean share of the fp32 top 10 that the candidate also returns. The bar sits between what bf16 and int8 reach,
# nearer bf16: a precision must rank about as bf16 does to be chosen without being asked for
# (docs/benchmarks.md#figures-behind-the-code).
MIN_AGREEMENT = 0.97
# Below this many chunks a top 10 is most of the sample and agreement says nothing; such a corpus embeds in
# seconds whatever the precision, so the gate fails rather than guess.
MIN_SAMPLE = 50

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class GateResult:
    """What the gate measured; ``passed`` is what ``auto`` acts on."""

    candidate: str  # the precision on trial ("int8")
    reference: str  # what it is compared with ("fp32")
    agreement: float  # mean top-k overlap, 0..1
    k: int
    queries: int
    documents: int
    threshold: float
    passed: bool
    seconds: float = 0.0  # what the gate cost, models loaded and both searches
    reason: str = ""  # why it failed without measuring, when it did
    earlier: bool = False  # taken over from the table's earlier build, not measured again

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "GateResult | None":
        """A result recorded by :meth:`to_dict` (extra keys ignored); None when it is not one."""
        try:
            return cls(**{**{f.name: record[f.name] for f in fields(cls) if f.name in record}, "earlier": True})
        except TypeError:
            return None

    def describe(self) -> str:
        when = " when the table was first built" if self.earlier else ""
        if self.reason:
            return f"{self.candidate} not used: {self.reason}{when}"
        verdict = "used" if self.passed else "not used"
        return (f"{self.candidate} {verdict}: top-{self.k} agreement with {self.reference} {self.agreement:.3f} over "
                f"{self.queries} queries x {self.documents} chunks of this corpus (needs >= {self.threshold}; "
                f"measured in {self.seconds:.1f}s{when})")


def _spaced(items: Sequence[Any], n: int) -> list[Any]:
    """At most ``n`` of ``items``, evenly spaced: deterministic, and not only the start of the corpus."""
    return list(items[:: max(1, len(items) // n)][:n])


def query_from(text: str, max_words: int = 24) -> str:
    """A query drawn from a chunk: its first sentence of at least four words, cut to ``max_words`` words."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    sentence = next((s for s in sentences if len(s.split()) >= 4), sentences[0] if sentences else text)
    return " ".join(sentence.split()[:max_words])


def top_k_agreement(queries_a, docs_a, queries_b, docs_b, k: int = TOP_K) -> float:
    """Mean over queries of the share of A's top ``k`` documents (by dot product) that B's top ``k`` also holds."""
    import numpy as np

    k = min(k, docs_a.shape[0])
    top_a = np.argsort(-(queries_a @ docs_a.T), axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-(queries_b @ docs_b.T), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b)]))


def run_gate(chunks: Sequence[Chunk], reference, candidate) -> GateResult:
    """Search ``chunks`` (a sample of the corpus) with queries drawn from them, embedded by ``reference`` and by
    ``candidate`` (embedders of the same model), and compare the top-10 lists with :data:`MIN_AGREEMENT`."""
    started, threshold = time.perf_counter(), MIN_AGREEMENT
    ref_name, cand_name = reference.info.precision, candidate.info.precision
    docs = _spaced(chunks, SAMPLE_CHUNKS)
    if len(docs) < MIN_SAMPLE:
        return GateResult(cand_name, ref_name, 0.0, TOP_K, 0, len(docs), threshold, False,
                          reason=f"the corpus sample has {len(docs)} chunks, fewer than the {MIN_SAMPLE} it needs")
    queries = [query_from(c.text) for c in _spaced(docs, QUERIES)]
    agreement = top_k_agreement(reference.embed_queries(queries), reference.embed(docs),
                                candidate.embed_queries(queries), candidate.embed(docs))
    return GateResult(cand_name, ref_name, round(agreement, 4), TOP_K, len(queries), len(docs), threshold,
                      agreement >= threshold, round(time.perf_counter() - started, 1))
