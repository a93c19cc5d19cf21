"""The ``tei`` embedder: vectors from a Text Embeddings Inference server over HTTP.

The server can be one the user runs (``text-embeddings-router`` or its Docker image), a Hugging Face Inference
Endpoint (bearer token from ``INDEXER_TEI_TOKEN`` or ``HF_TOKEN``), or TEI containers on Modal. The chunker still
runs here and needs the served model's tokenizer locally; when that tokenizer is the server's (checked through
``/tokenize``), chunks travel as token ids, so the server embeds exactly the tokens the chunker cut and
tokenises nothing. The HTTP client lives in :mod:`indexer_tei.client` (:class:`TEIClient`); aiohttp and numpy are
imported on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.components import Embedder, EmbedderOptions
from indexer.errors import ConfigError
from indexer.hookspecs import hookimpl
from indexer.options import option
from indexer.types import Chunk, ModelInfo

log = logging.getLogger("indexer.tei")

_PRECISIONS = ("auto", "fast", "exact", "fp32", "bf16", "fp16")
_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# Mixed case, accents, digits, punctuation and CJK: enough to tell two tokenizers apart.
_PROBE = "Indexer probe: Ünïcode façade, 3.14159 — naïve café 東京 (tokenizer check) e-mail@example.org"


@dataclass(frozen=True)
class TEIOptions(EmbedderOptions):
    url: str | None = option(None, "the server's URL, when --model names the model (else --model URL, else "
                             "$INDEXER_TEI_URL); private: never on a card or in a log", secret=True)
    tokenizer: str | None = option(None, "the served model's tokenizer for the chunker: a model folder, a "
                                   "tokenizer.json or a Hub id in the local cache (default: the served model_id)")
    normalize: bool = option(True, "ask the server for unit-length vectors (TEI's default)")
    truncate: bool = option(False, "let the server cut inputs longer than its max_input_length instead of failing")
    token_ids: bool = option(True, "send the chunker's token ids instead of text when the local tokenizer is the "
                             "server's")
    query_prompt_name: str | None = option(None, "prompt from the model's sentence-transformers config, applied by "
                                           "the server to queries")
    document_prompt_name: str | None = option(None, "the same for chunks")
    timeout: float = option(120.0, "seconds one request may take before it is retried", gt=0)
    max_retry_seconds: float = option(600.0, "the run fails once the server has failed this long without a single "
                                      "success", gt=0)
    payload_limit: int = option(2_000_000, "most bytes per request body: TEI's --payload-limit", ge=4096)
    max_concurrent_inputs: int | None = option(None, "inputs in flight at once (default: the server's "
                                               "max_concurrent_requests)", ge=1)
    backoff_base: float = option(0.5, "retry backoff ceiling in seconds, doubling per retry (full jitter)", gt=0)
    backoff_max: float = option(30.0, "the largest retry backoff ceiling, in seconds", gt=0)


class TEIEmbedder(Embedder):
    """Embeds through a TEI server; its options are :class:`TEIOptions`.

    :param model: the server's URL (``http://localhost:8080``, an Inference Endpoint URL); the ``url`` option or
        ``INDEXER_TEI_URL`` are used instead when ``model`` is not a URL.
    :param precision: ``auto`` takes whatever the server runs; ``exact``/``fp32``/``fp16``/``bf16`` insist on it.
    :param device, batch_tokens: accepted for a uniform command line; the server decides both.
    """

    description = "Text Embeddings Inference server over HTTP (self-hosted, HF Inference Endpoint, TEI on Modal)"
    portable = True  # a worker anywhere reaches the server by its URL

    name = "tei"
    Options = TEIOptions

    def __init__(self, model: str = "", **options: Any):
        super().__init__(model, **options)
        self._client = None
        self._tokenizer = None
        self._tokenizer_file: Path | None = None
        self._specials: tuple[list[int], list[int]] = ([], [])
        self._send_ids: bool | None = None  # decided once the tokenizers were compared
        self._prompt_tokens = 0
        self._info: ModelInfo | None = None

    def __repr__(self) -> str:
        try:
            where = self.client.display_url
        except ConfigError:
            where = "no URL"
        return f"TEIEmbedder({where!r})"

    # ----------------------------------------------------------------------------------------------------------
    # Configuration
    # ----------------------------------------------------------------------------------------------------------

    def server_url(self) -> str:
        if self.options.url:
            return str(self.options.url)
        if self.model.startswith(("http://", "https://")):
            return self.model
        if os.environ.get("INDEXER_TEI_URL"):
            return os.environ["INDEXER_TEI_URL"]
        raise ConfigError(
            "the tei embedder needs the server's URL: pass --model http://HOST:PORT (or an Inference Endpoint URL), "
            "--option embedder.url=URL, or set INDEXER_TEI_URL"
        )

    @property
    def client(self):
        """The :class:`indexer_tei.client.TEIClient` for this embedder's server."""
        if self._client is None:
            from indexer_tei.client import TEIClient

            o = self.options
            self._client = TEIClient(
                self.server_url(), timeout=o.timeout, max_retry_seconds=o.max_retry_seconds,
                payload_limit=o.payload_limit, max_concurrent_inputs=o.max_concurrent_inputs,
                max_batch_size=self.max_batch_size, backoff_base=o.backoff_base, backoff_max=o.backoff_max,
            )
        return self._client

    def check(self) -> None:
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)} (got {self.precision!r})")
        info = self.client.server_info()
        model_type = info.get("model_type") or {}
        if isinstance(model_type, dict) and model_type and "embedding" not in model_type:
            kind = next(iter(model_type))
            raise ConfigError(f"the TEI server at {self.client.display_url} serves a {kind} model "
                              f"({info['model_id']}), not an embedding model")
        served = _DTYPES.get(str(info.get("model_dtype")), str(info.get("model_dtype")))
        wanted = {"exact": "fp32"}.get(self.precision, self.precision)
        if wanted not in ("auto", "fast") and served != wanted:
            raise ConfigError(
                f"--precision {self.precision} asks for {wanted}, but the TEI server at {self.client.display_url} "
                f"runs {info.get('model_dtype')}; start it with --dtype {_torch_dtype(wanted)} or use --precision auto"
            )
        self.tokenizer()
        self._compare_tokenizers()
        _ = self.info

    # ----------------------------------------------------------------------------------------------------------
    # Tokenizer (the chunker's; must be the served model's)
    # ----------------------------------------------------------------------------------------------------------

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self._find_tokenizer()
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises plain Exceptions for unreadable files
                raise ConfigError(f"cannot load the tokenizer {path}: {exc}") from None
            # Counts must be the real ones: the server truncates and pads by itself.
            tok.no_truncation()
            tok.no_padding()
            self._tokenizer, self._tokenizer_file = tok, path
            self._specials = _special_template(tok)
        return self._tokenizer

    def _find_tokenizer(self) -> Path:
        info = self.client.server_info()
        spec = self.options.tokenizer or info["model_id"]
        local = Path(os.path.expanduser(spec))
        if local.is_file():
            return local
        if local.is_dir():
            if (local / "tokenizer.json").is_file():
                return local / "tokenizer.json"
            raise ConfigError(f"tokenizer folder {local} has no tokenizer.json (a fast tokenizer is needed)")
        found = _cached_tokenizer(spec, info.get("model_sha") if not self.options.tokenizer else None)
        if found is not None:
            return found
        what = f"tokenizer {spec!r}" if self.options.tokenizer else f"the tokenizer of {spec} (the server's model)"
        raise ConfigError(
            f"the chunker needs {what} on this machine and found it neither as a path nor in the Hugging Face "
            f"cache; download it (huggingface-cli download {spec} tokenizer.json) or pass "
            "--option embedder.tokenizer=PATH (a model folder or a tokenizer.json)"
        )

    def tokenizer_key(self) -> str:
        self.tokenizer()
        assert self._tokenizer_file is not None
        return hashlib.sha256(self._tokenizer_file.read_bytes()).hexdigest()[:16]

    def content_token_limit(self) -> int:
        self.tokenizer()
        self._compare_tokenizers()
        prefix, suffix = self._specials
        return self.client.limits.max_input_length - len(prefix) - len(suffix) - self._prompt_tokens

    def _compare_tokenizers(self) -> None:
        """Decide whether chunks go as token ids: only when the server makes the same ids of a probe text."""
        if self._send_ids is not None:
            return
        local = self.tokenizer().encode(_PROBE, add_special_tokens=True).ids
        served = self.client.tokenize(_PROBE)
        where = self.client.display_url
        if served is None:
            log.warning("TEI server %s has no /tokenize: cannot check that the local tokenizer is the server's; "
                        "sending text", where)
            self._send_ids = False
        elif served != local:
            message = (f"the local tokenizer {self._tokenizer_file} does not tokenise like the TEI server at {where} "
                       f"({self.client.server_info()['model_id']}): chunks would be cut by the wrong token counts")
            if self.options.token_ids:
                raise ConfigError(message + "; pass --option embedder.tokenizer=PATH with the served model's "
                                  "tokenizer (or --option embedder.token_ids=false to send text regardless)")
            log.warning("%s; sending text as asked (token_ids=false)", message)
            self._send_ids = False
        else:
            self._send_ids = self.options.token_ids and self.options.document_prompt_name is None
        if self.options.document_prompt_name is not None:
            with_prompt = self.client.tokenize("a", prompt_name=self.options.document_prompt_name)
            without = self.client.tokenize("a")
            if with_prompt is not None and without is not None:
                self._prompt_tokens = max(0, len(with_prompt) - len(without))

    # ----------------------------------------------------------------------------------------------------------
    # Model info
    # ----------------------------------------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            info = self.client.server_info()
            model_type = info.get("model_type") or {}
            embedding = model_type.get("embedding") if isinstance(model_type, dict) else None
            pooling = str((embedding or {}).get("pooling", "unknown"))
            probe = self.client.embed(["dimension probe"], normalize=self.options.normalize, truncate=True)
            # The weights are out of sight: the served model's id and commit stand for them, with what else
            # changes the vectors (pooling, normalisation, the document prompt). The URL does not: the same
            # model behind another server makes the same vectors.
            identity = {"model_id": info["model_id"], "model_sha": info.get("model_sha"), "pooling": pooling,
                        "normalize": self.options.normalize, "document_prompt_name": self.options.document_prompt_name}
            self._info = ModelInfo(
                name=str(info["model_id"]),
                revision=str(info.get("model_sha") or "unknown"),
                fingerprint=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
                dimension=int(probe.shape[1]),
                pooling=pooling,
                normalize=self.options.normalize,
                max_tokens=int(info["max_input_length"]),
                precision=_DTYPES.get(str(info.get("model_dtype")), str(info.get("model_dtype"))),
            )
        return self._info

    # ----------------------------------------------------------------------------------------------------------
    # Embedding
    # ----------------------------------------------------------------------------------------------------------

    def embed(self, chunks: Sequence[Chunk], progress: Callable[[int], None] | None = None) -> Any:
        """Vectors for ``chunks`` in their order; requests are sized, scheduled and retried by the client."""
        import numpy as np

        if not chunks:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        self._compare_tokenizers()
        prefix, suffix = self._specials
        room = self.client.limits.max_input_length - len(prefix) - len(suffix)
        inputs: list[Any] = []
        tokens: list[int] = []
        for c in chunks:
            if self._send_ids and c.token_ids is not None:
                ids = list(c.token_ids)
                if self.options.truncate and len(ids) > room:
                    ids = ids[:room]  # cut here: a server-side cut of ids would drop the closing special token
                inputs.append(prefix + ids + suffix)
                tokens.append(len(inputs[-1]))
            else:
                inputs.append(c.text)
                tokens.append(c.token_count + len(prefix) + len(suffix) + self._prompt_tokens)
        return self.client.embed(inputs, labels=[f"chunk {c.id}" for c in chunks], tokens=tokens,
                                 normalize=self.options.normalize, truncate=self.options.truncate,
                                 prompt_name=self.options.document_prompt_name, progress=progress)

    def embed_batch(self, chunks: Sequence[Chunk]) -> Any:
        return self.embed(chunks)

    def embed_queries(self, queries: Sequence[str]) -> Any:
        import numpy as np

        if not queries:
            return np.zeros((0, self.info.dimension), dtype=np.float32)
        # Queries are cut to fit, as the local embedder cuts them.
        return self.client.embed(list(queries), labels=[f"query {i}" for i in range(len(queries))],
                                 normalize=self.options.normalize, truncate=True, prompt_name=self.options.query_prompt_name)


def _cached_tokenizer(repo_id: str, revision: str | None) -> Path | None:
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        return None
    from huggingface_hub import hf_hub_download

    for rev in dict.fromkeys([revision, None]):
        try:
            return Path(hf_hub_download(repo_id, "tokenizer.json", revision=rev, local_files_only=True))
        except Exception:  # not cached, not a repo id, no such revision: all mean "not here"
            continue
    return None


def _special_template(tok) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer's post-processor puts before and after one sequence ([CLS] … [SEP])."""
    enc = tok.encode("a", add_special_tokens=True)
    content = [j for j, special in enumerate(enc.special_tokens_mask) if not special]
    if not content:
        return list(enc.ids), []
    return list(enc.ids[: content[0]]), list(enc.ids[content[-1] + 1 :])


def _torch_dtype(precision: str) -> str:
    return {v: k for k, v in _DTYPES.items()}.get(precision, precision)


@hookimpl
def register_embedders(register):
    register("tei", TEIEmbedder)
