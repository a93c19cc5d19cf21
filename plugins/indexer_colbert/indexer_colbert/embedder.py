"""The ColBERT embedder: per-token vectors of chunks and queries, from colbert-ai's own ``Checkpoint``.

It is the encoder RAGatouille indexes with (same class, same checkpoint, same document and query tokenizers), so
the vectors it writes into the work directory are the ones the PLAID index compresses and the ones the
LanceDB multivector table stores, and a brute-force MaxSim over them is the reference both are checked against.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from indexer.components import Embedder, EmbedderOptions
from indexer.errors import ConfigError
from indexer.options import option
from indexer.types import Chunk, ModelInfo

from indexer_colbert.checkpoint import read_settings, resolve_checkpoint
from indexer_colbert.quiet import quiet

# [CLS], the [D] marker and [SEP] wrap every document.
DOC_SPECIAL_TOKENS = 3
# RAGatouille sizes each query's [MASK] padding from its word count (RAGatouille's PLAIDModelIndex.search); the
# same rule here makes the query vectors identical to the ones its searcher makes.
QUERY_MIN_TOKENS = 32
QUERY_TOKENS_PER_WORD = 1.35
# On CPU, colbert-ai encodes a 16k-token batch about ten times slower per token than a 4k-token one (measured on
# a 2-core machine with MiniLM: 93 vs 983 tokens/s), so CPU batches are kept at most this big.
CPU_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class ColBERTOptions(EmbedderOptions):
    doc_maxlen: int | None = option(None, "most tokens per chunk, markers included (default: the checkpoint's "
                                    "doc_maxlen)", ge=1)


class ColBERTEmbedder(Embedder):
    """Per-token vectors (``kind = "multivector"``) from a ColBERT checkpoint; its options are
    :class:`ColBERTOptions`.

    :param model: a checkpoint folder, or a Hub id in the local cache (default ``colbert-ir/colbertv2.0``).
    :param device: ``auto`` (colbert-ai encodes on CUDA when it sees a GPU) or ``cpu``/``cuda`` to insist.
    :param precision: ``auto``; colbert-ai encodes in fp16 on GPU (its mixed precision) and fp32 on CPU.
    """

    kind: ClassVar[str] = "multivector"
    default_model: ClassVar[str | None] = "colbert-ir/colbertv2.0"
    name = "colbert"
    Options = ColBERTOptions

    def __init__(self, model: str, **options: Any):
        super().__init__(model, **options)
        self.doc_maxlen = self.options.doc_maxlen
        self._path: Path | None = None
        self._settings: dict[str, Any] | None = None
        self._info: ModelInfo | None = None
        self._ckpt: Any = None
        self._positions: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ckpt"] = None  # a loaded model is rebuilt where the embedder is unpickled
        return state

    # ----------------------------------------------------------------------------------------------------------

    def check(self) -> None:
        settings = self.settings
        if self.precision not in ("auto", "exact", "fp32", "fp16"):
            raise ConfigError(f"precision {self.precision!r}: the colbert embedder takes auto (fp16 on GPU, fp32 on "
                              "CPU)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device {self.device!r}: the colbert embedder takes auto, cpu or cuda")
        if self.device != "auto" and self.device != self._colbert_device():
            raise ConfigError(
                f"--device {self.device}: colbert-ai encodes on {self._colbert_device()} here (it uses CUDA whenever "
                "a GPU is visible; set CUDA_VISIBLE_DEVICES= to keep it on the CPU)"
            )
        limit = self._max_positions()
        if not DOC_SPECIAL_TOKENS < settings["doc_maxlen"] <= limit:
            raise ConfigError(f"doc_maxlen {settings['doc_maxlen']} must be between {DOC_SPECIAL_TOKENS + 1} and "
                              f"{limit} for {self.model}")

    def release(self) -> None:
        self._ckpt = None

    def token_budget(self) -> int:
        budget = super().token_budget()
        return min(budget, CPU_BATCH_TOKENS) if self._colbert_device() == "cpu" else budget

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_checkpoint(self.model)
        return self._path

    @property
    def settings(self) -> dict[str, Any]:
        """The checkpoint's ColBERT settings, with this embedder's ``doc_maxlen``."""
        if self._settings is None:
            settings = {"doc_maxlen": 180, "query_maxlen": QUERY_MIN_TOKENS, **read_settings(self.path)}
            if self.doc_maxlen is not None:
                settings["doc_maxlen"] = int(self.doc_maxlen)
            self._settings = settings
        return self._settings

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            s = self.settings
            self._info = ModelInfo(
                name=self.model, revision=_revision(self.path), fingerprint=_fingerprint(self.path, s),
                dimension=int(s["dim"]), pooling="colbert", normalize=True, max_tokens=int(s["doc_maxlen"]),
                precision="fp16" if self._colbert_device() == "cuda" else "fp32", kind="multivector",
            )
        return self._info

    def tokenizer(self) -> Any:
        """The checkpoint's fast tokenizer (the chunker's), without transformers when ``tokenizer.json`` is there."""
        if (self.path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(self.path)).backend_tokenizer
        tok.no_truncation()  # the chunker needs real counts; colbert-ai truncates by itself
        tok.no_padding()
        return tok

    def content_token_limit(self) -> int:
        return int(self.settings["doc_maxlen"]) - DOC_SPECIAL_TOKENS

    # ----------------------------------------------------------------------------------------------------------

    def checkpoint(self) -> Any:
        """colbert-ai's ``Checkpoint`` for this model, loaded once."""
        if self._ckpt is None:
            with quiet():
                from colbert.infra import ColBERTConfig
                from colbert.modeling.checkpoint import Checkpoint

                config = ColBERTConfig.from_existing(
                    ColBERTConfig.load_from_checkpoint(str(self.path)),
                    ColBERTConfig(doc_maxlen=int(self.settings["doc_maxlen"])),
                )
                self._ckpt = Checkpoint(str(self.path), colbert_config=config, verbose=0)
        return self._ckpt

    def embed_batch(self, chunks: Sequence[Chunk]) -> list[Any]:
        import numpy as np

        with quiet():
            flat, lengths = self.checkpoint().docFromText([c.text for c in chunks], bsize=len(chunks),
                                                          keep_dims="flatten")
        flat = flat.float().numpy()
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return [flat[offsets[i]:offsets[i + 1]] for i in range(len(chunks))]

    def embed(self, chunks: Sequence[Chunk], progress: Callable[[int], None] | None = None) -> list[Any]:
        """One ``(tokens, dim)`` float32 array per chunk, in input order (punctuation tokens are masked out, as
        ColBERT indexes them)."""
        out: list[Any] = [None] * len(chunks)
        for idx in self.batches(chunks):
            for i, vectors in zip(idx, self.embed_batch([chunks[i] for i in idx])):
                out[i] = vectors
            if progress:
                progress(len(idx))
        return out

    def embed_queries(self, queries: Sequence[str]) -> list[Any]:
        """One ``(query tokens, dim)`` array per query: [Q]-marked and padded with [MASK] tokens to the length
        RAGatouille's searcher gives the same query."""
        ckpt = self.checkpoint()
        out: list[Any] = []
        for q in queries:
            ckpt.query_tokenizer.query_maxlen = query_length(q, self._max_positions())
            with quiet():
                out.append(ckpt.queryFromText([q], bsize=1)[0].float().cpu().numpy())
        return out

    # ----------------------------------------------------------------------------------------------------------

    def _max_positions(self) -> int:
        if self._positions is None:
            config = json.loads((self.path / "config.json").read_text())
            self._positions = config.get("max_position_embeddings", 512) - 4
        return self._positions

    def _colbert_device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def query_length(query: str, max_tokens: int) -> int:
    return min(max(int(len(query.split(" ")) * QUERY_TOKENS_PER_WORD), QUERY_MIN_TOKENS), max_tokens)


def _revision(path: Path) -> str:
    # A Hub snapshot folder is named after its commit.
    parts = path.resolve().parts
    return parts[-1] if len(parts) > 2 and parts[-2] == "snapshots" else "local"


def _fingerprint(path: Path, settings: dict[str, Any]) -> str:
    """Hash of the settings this embedder encodes with and of the checkpoint's model files (weights, configs,
    tokenizer), as the local embedder fingerprints a model."""
    from indexer.modelfiles import affects_vectors, hash_files

    from indexer_colbert.checkpoint import CHECKPOINT_SETTINGS

    decisive = {k: settings[k] for k in CHECKPOINT_SETTINGS if k in settings}
    h = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode())
    files = sorted(p for p in path.iterdir() if p.is_file() and affects_vectors(Path(p.name)))
    return hash_files(files, path, h)
