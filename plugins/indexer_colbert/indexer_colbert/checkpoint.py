"""ColBERT checkpoints: find one (a folder, or a Hub id in the local Hugging Face cache), or make one from a
BERT-family encoder's weights.

A ColBERT checkpoint, as colbert-ai and RAGatouille read it, is a Hugging Face model folder (``config.json``,
the weights of an ``HF_ColBERT``: the encoder under its base-model prefix plus ``linear.weight``, the projection to
ColBERT's dimension, and the tokenizer files) with ``artifact.metadata``: the ColBERT settings as JSON (dim,
query/doc markers, query and document lengths, punctuation masking).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from indexer.errors import ConfigError

METADATA = "artifact.metadata"

# The settings that decide what a checkpoint's vectors are, and all of its metadata the fingerprint takes; nothing
# machine- or run-specific (colbert-ai's own save writes host names and dates, which would change the
# checkpoint's fingerprint on every save).
CHECKPOINT_SETTINGS = ("dim", "doc_maxlen", "query_maxlen", "mask_punctuation", "attend_to_mask_tokens",
                       "similarity", "interaction", "query_token_id", "doc_token_id", "query_token", "doc_token")


def resolve_checkpoint(model: str) -> Path:
    """The folder of ColBERT checkpoint ``model``: a path, or a Hub id already in the local cache."""
    from indexer.modelfiles import from_hf_cache

    path = Path(model).expanduser()
    if not path.is_dir():
        found = from_hf_cache(model)
        if found is None:
            raise ConfigError(
                f"ColBERT model {model!r} is neither a folder nor in the local Hugging Face cache; download it once "
                f"(`huggingface-cli download {model}`, or `python -c \"import huggingface_hub as h; "
                f"h.snapshot_download('{model}')\"`) or pass --model PATH (make one with `indexer colbert "
                "init-checkpoint`)"
            )
        path = found[0]
    if not (path / METADATA).is_file():
        raise ConfigError(
            f"{path} is not a ColBERT checkpoint (no {METADATA}); make one from a BERT encoder with "
            f"`indexer colbert init-checkpoint --from {model} OUT`"
        )
    return path


def read_settings(path: Path) -> dict[str, Any]:
    data = json.loads((path / METADATA).read_text())
    return data.get("config", data)


def init_checkpoint(source: str, out: str | Path, *, dim: int = 128, doc_maxlen: int = 256, query_maxlen: int = 32,
                    seed: int = 0) -> Path:
    """Write a ColBERT checkpoint to ``out``: the BERT-family encoder at ``source``, a projection to ``dim``
    dimensions and ColBERT's settings.

    The projection is a random orthonormal matrix drawn with ``seed``: an untrained ColBERT head that keeps the
    encoder's token geometry (inner products are preserved in expectation), so retrieval is meaningful before any
    training, and the same inputs always give the same checkpoint.
    """
    import numpy as np
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.modeling.hf_colbert import class_factory
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "linear.weight newly initialized": it is, on purpose, just below
    out = Path(out)
    settings = {"dim": dim, "doc_maxlen": doc_maxlen, "query_maxlen": query_maxlen, "mask_punctuation": True,
                "attend_to_mask_tokens": False, "similarity": "cosine", "interaction": "colbert",
                "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]"}
    model = class_factory(source).from_pretrained(source, colbert_config=ColBERTConfig(**settings))
    hidden = model.config.hidden_size
    if dim > hidden:
        raise ConfigError(f"--dim {dim} is more than the encoder's {hidden} hidden dimensions")
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((hidden, dim)))
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(basis.T.astype(np.float32)))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(source).save_pretrained(str(out))
    (out / METADATA).write_text(json.dumps(settings, indent=1, sort_keys=True))
    return out
