"""The local embedder: device and precision choice, loading the model, and embedding batches.

:class:`LocalEmbedder` runs a sentence-embedding model with plain ``transformers``; the model's files, its
sentence-transformers config and the pooling are :mod:`indexer_local.model`, the faster CPU paths
:mod:`indexer_local.kernels`, int8 :mod:`indexer_local.int8` and the gate that lets ``auto`` pick int8
:mod:`indexer_local.gate`. torch and transformers are imported on first use, never at plugin import.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.components import Embedder, EmbedderOptions, usable_cores
from indexer.config import DEFAULT_MODEL
from indexer.errors import ConfigError
from indexer.log import get_logger
from indexer.options import option
from indexer.types import Chunk, ModelInfo
from indexer_local import gate, int8, kernels
from indexer_local.model import ModelFiles, load_tokenizer, pool, special_template

log = get_logger("local")
PRECISIONS = ("auto", "fast", "exact", "fp32", "bf16", "fp16", "int8")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Sequence lengths are padded up to a multiple of this: a handful of distinct shapes keeps oneDNN/cuBLAS
# kernel choices (and compiled graphs) reusable, and length-sorted batches waste almost nothing on it.
_LENGTH_MULTIPLE = 8
# Padded tokens per batch on a CPU: once a layer's output (rows x 1,536 for MiniLM's FFN) no longer fits the caches
# the GEMMs slow down (docs/benchmarks.md#figures-behind-the-code). A GPU keeps the base default (16,384), which it
# needs to stay busy.
CPU_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class LocalOptions(EmbedderOptions):
    query_prompt: str | None = option(None, "prompt name from the model's config_sentence_transformers.json, or "
                                      "literal text, put before search queries (default: the model's query prompt, "
                                      "when it has one)")
    document_prompt: str | None = option(None, "the same for chunks (default: the model's default prompt, or its "
                                         "document/passage prompt); an empty string turns a prompt off")
    threads: int | None = option(None, "torch CPU threads (default: every core this process may run on)", ge=1)


class LocalEmbedder(Embedder):
    """A Hugging Face sentence-embedding model on this machine's CPU or GPU; its options are :class:`LocalOptions`.

    :param model: a local folder, or a Hub id found in the Hugging Face cache (no download happens here).
    :param device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    :param precision: ``auto`` (the fastest mode this hardware runs well: bf16 where it has native bf16, else
        fp32; int8 on CPUs where it is faster still, but only once :meth:`settle` has found that int8 ranks a
        sample of the corpus as fp32 does), ``fast`` (half precision even where the hardware has no native
        support for it), ``exact`` (fp32), or an explicit ``fp32``/``bf16``/``fp16``/``int8`` (int8: CPU only).
    :param batch_tokens: padded tokens per batch; ``None``: 4,096 on a CPU, 16,384 on a GPU.
    """

    description = "Hugging Face sentence-embedding model run locally with transformers (CPU, CUDA, MPS)"
    name = "local"
    Options = LocalOptions

    def __init__(self, model: str = DEFAULT_MODEL, **options: Any):
        super().__init__(model, **options)
        self._files: ModelFiles | None = None
        self._tokenizer = None
        self._net = None  # the loaded transformers model
        self._torch_device = None
        self._dtype_name: str | None = None
        self._gate = None  # the int8 gate's result, once settle() has run it
        self._info: ModelInfo | None = None
        self._prompt_ids: dict[str, list[int]] = {}
        self._active_prompt = "document"
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------------------
    # Finding the model (cheap: file system and the Hugging Face cache only)
    # ----------------------------------------------------------------------------------------------------------

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N (got {self.device!r})")
        if self.precision == "int8":
            _check_int8(self.device)
        self.files().check()

    def files(self) -> ModelFiles:
        """The model's folder and config files (found on first use)."""
        if self._files is None:
            self._files = ModelFiles(self.model)
        return self._files

    def model_path(self) -> Path:
        """The model's folder, found as :class:`~indexer_local.model.ModelFiles` finds it (path, Hugging Face
        cache, a package that ships it); what a fine-tune starts from."""
        return self.files().path

    def _st_config(self) -> dict[str, Any]:
        return self.files().sentence_config()

    # ----------------------------------------------------------------------------------------------------------
    # Tokenizer (cheap: no torch)
    # ----------------------------------------------------------------------------------------------------------

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            tok = load_tokenizer(self.model_path())
            self._tokenizer = tok
            self._specials = special_template(tok)
            self._pad_id = self.files().pad_id(tok)
        return self._tokenizer

    def tokenizer_key(self) -> str:
        return self.files().tokenizer_key()

    def _prompt(self, which: str) -> list[int]:
        if which not in self._prompt_ids:
            chosen = self.options.query_prompt if which == "query" else self.options.document_prompt
            text = self.files().prompt_text(which, chosen)
            self._prompt_ids[which] = self.tokenizer().encode(text, add_special_tokens=False).ids if text else []
        return self._prompt_ids[which]

    def content_token_limit(self) -> int:
        self.tokenizer()
        prefix, suffix = self._specials
        return self._st_config()["max_tokens"] - len(prefix) - len(suffix) - len(self._prompt("document"))

    # ----------------------------------------------------------------------------------------------------------
    # Model info
    # ----------------------------------------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            cfg = self._st_config()
            dimension = self.files().dimension()
            if not dimension:
                dimension = self._load().config.hidden_size
            self._info = ModelInfo(
                name=self.model,
                revision=self.files().revision,
                fingerprint=self.files().fingerprint(),
                dimension=int(dimension),
                pooling=cfg["pooling"],
                normalize=cfg["normalize"],
                max_tokens=cfg["max_tokens"],
                precision=self._choose()[1],
            )
        return self._info

    def release(self) -> None:
        with self._lock:
            self._net = None
        if str(self._torch_device).startswith("cuda"):  # hand the freed blocks back to the driver
            import torch

            torch.cuda.empty_cache()

    def token_budget(self) -> int:
        if self.batch_tokens is not None:
            return self.batch_tokens
        return CPU_BATCH_TOKENS if self._choose()[0] == "cpu" else self.default_batch_tokens

    # ----------------------------------------------------------------------------------------------------------
    # Device, precision, loading
    # ----------------------------------------------------------------------------------------------------------

    def _choose(self) -> tuple[str, str]:
        """(device, precision) this embedder runs with; decided without loading the model. Under ``auto`` this is
        the choice without int8 until :meth:`settle` has run the int8 gate."""
        if self._dtype_name is not None:
            return str(self._torch_device), self._dtype_name
        device = "cpu" if self.precision == "int8" and self.device == "auto" else _pick_device(self.device)
        self._torch_device = device
        self._dtype_name = _pick_precision(self.precision, device)
        return device, self._dtype_name

    def sample_size(self) -> int:
        # auto weighs int8 only where it is faster than what auto picks without it (see _int8_is_faster)
        if self.precision != "auto" or self._gate is not None:
            return 0
        device, precision = self._choose()
        return gate.SAMPLE_CHUNKS if device == "cpu" and _int8_is_faster(precision) else 0

    def settle(self, sample, previous=None) -> dict[str, Any] | None:
        """Under ``auto``, on a CPU where int8 is the faster choice: run the retrieval-quality gate
        (:mod:`indexer_local.gate`) on ``sample()``, or take ``previous``'s verdict, and embed in int8 from now
        on if it passed."""
        if not self.sample_size():
            return None
        candidate = self._on_cpu("int8")
        self._gate = gate.GateResult.from_dict(previous) if previous else None
        if self._gate is None:
            reference = self._on_cpu("exact")
            self._gate = gate.run_gate(sample(), reference, candidate)
            reference.release()
        if self._gate.passed:
            self.release()
            self._dtype_name, self._info, self._net = "int8", None, candidate._net
        return {"summary": self._gate.describe(), **self._gate.to_dict()}

    def _on_cpu(self, precision: str) -> "LocalEmbedder":
        """This embedder's model, prompts and batching, on the CPU in another precision."""
        return LocalEmbedder(self.model, device="cpu", precision=precision, batch_tokens=self.batch_tokens,
                             **self.options.as_dict())

    def _load(self):
        if self._net is not None:
            return self._net
        with self._lock:
            if self._net is not None:
                return self._net
            self.check()
            import torch
            from transformers import AutoModel

            device, precision = self._choose()
            if device == "cpu":
                torch.set_num_threads(self.options.threads or len(usable_cores()))
            # int8 starts from the fp32 model: only its linear layers are quantised
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}[precision]
            from transformers.utils import logging as hf_logging

            # transformers 5 draws a progress bar per load, which would cut through the pipeline's own.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                net = AutoModel.from_pretrained(str(self.model_path()), dtype=dtype, attn_implementation="sdpa")
            except (ValueError, ImportError):  # an architecture without an SDPA path
                net = AutoModel.from_pretrained(str(self.model_path()), dtype=dtype)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            net.eval().to(device)
            layers = "stock layers"
            if precision == "int8":
                net.pooler = None  # feeds nothing we use
                count = int8.quantize_linears(net, full_range=int8.has_vnni(kernels.cpu_flags()))
                layers = f"{count} int8 linear layers"
            elif device == "cpu" and precision in ("fp32", "bf16") and kernels.fuse_for_cpu(net, dtype):
                layers = "oneDNN linear layers"
            self.tokenizer()
            self._net = net
            log.debug(f"local embedder: {self.model} ({self.model_path()}) loaded on {device} in {precision}, "
                      f"{layers}, attention {getattr(net.config, '_attn_implementation', None) or 'default'}")
        return net

    # ----------------------------------------------------------------------------------------------------------
    # Embedding
    # ----------------------------------------------------------------------------------------------------------

    def embed_queries(self, queries: Sequence[str]) -> Any:
        self._active_prompt = "query"
        try:
            return super().embed_queries(queries)
        finally:
            self._active_prompt = "document"

    def input_ids(self, chunks: Sequence[Chunk]) -> list[list[int]]:
        """Model inputs for ``chunks``: prompt + content ids (truncated to fit), wrapped in the special tokens
        the tokenizer's post-processor adds. Chunks that carry ``token_ids`` are not tokenised again."""
        tok = self.tokenizer()
        prefix, suffix = self._specials
        prompt = self._prompt(self._active_prompt)
        room = self._st_config()["max_tokens"] - len(prefix) - len(suffix) - len(prompt)
        lower = self._st_config()["do_lower_case"]
        # A lower-casing model config means the chunker's ids (from the original case) are not what it expects.
        missing = [i for i, c in enumerate(chunks) if c.token_ids is None or lower]
        encoded = {}
        if missing:
            texts = [chunks[i].text.lower() if lower else chunks[i].text for i in missing]
            for i, enc in zip(missing, tok.encode_batch(texts, add_special_tokens=False)):
                encoded[i] = enc.ids
        out = []
        for i, c in enumerate(chunks):
            ids = encoded[i] if i in encoded else c.token_ids
            out.append(prefix + prompt + list(ids[:room]) + suffix)
        return out

    def embed_batch(self, chunks: Sequence[Chunk]) -> Any:
        net = self._load()
        return self._forward(net, self.input_ids(chunks))

    def _forward(self, net, rows: list[list[int]]):
        import numpy as np
        import torch

        cfg = self._st_config()
        self.tokenizer()  # loads it, its special tokens and its pad id once
        pad_id = self._pad_id
        longest = max(len(r) for r in rows)
        width = -(-longest // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = r
            mask[j, : len(r)] = 1
        device = self._torch_device
        ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
        mask_t = torch.from_numpy(mask).to(device, non_blocking=True)
        with torch.inference_mode():
            hidden = net(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            pool_mask = mask_t
            if not cfg["include_prompt"] and self._prompt(self._active_prompt):
                # As sentence-transformers does: the leading special tokens go out of the pool with the prompt.
                pool_mask = mask_t.clone()
                pool_mask[:, : len(self._specials[0]) + len(self._prompt(self._active_prompt))] = 0
            vecs = pool(hidden, pool_mask, cfg["pooling"])
            if cfg["normalize"]:
                vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
            return vecs.cpu().numpy().astype(np.float32, copy=False)


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _pick_precision(precision: str, device: str) -> str:
    if precision in ("fp32", "bf16", "fp16", "int8"):
        return precision
    if precision == "exact":
        return "fp32"
    kind = device.split(":")[0]
    if kind == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "mps":
        return "fp16"
    # CPU: without native bf16 dot products half precision is emulated and slower than fp32.
    if precision == "fast" or kernels.cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _int8_is_faster(precision: str) -> bool:
    """Whether int8 beats ``precision`` (what auto picks without int8) on this CPU: only against fp32, on a CPU with
    fbgemm's VNNI or AVX2 int8 kernels. Where auto picks bf16 the CPU has native bf16, and there int8 was no faster
    (AMX bf16: several times faster; AVX-512 BF16 on an idle Zen 5: int8 0.95x bf16), so the gate's cost would buy
    nothing (docs/benchmarks.md#figures-behind-the-code)."""
    if precision != "fp32":  # auto picks fp32 only without native bf16 (AMX included)
        return False
    flags = kernels.cpu_flags()
    return int8.int8_engine() is not None and (int8.has_vnni(flags) or "avx2" in flags)


def _check_int8(device: str) -> None:
    if device.split(":")[0] not in ("auto", "cpu"):
        raise ConfigError(f"precision int8 runs on CPUs only (device {device!r}): pass --device cpu, or keep the GPU "
                          "with --precision auto (bf16/fp16)")
    if int8.int8_engine() is None:
        import torch

        raise ConfigError("precision int8 needs torch's x86 int8 kernels (fbgemm), which this torch build lacks "
                          f"(quantized engines: {', '.join(torch.backends.quantized.supported_engines) or 'none'}); "
                          "use --precision exact or auto")
