"""The default dense embedder (registered as ``local``): a sentence-embedding model run in this process with plain
``transformers``.

Pooling, normalisation, maximum length and prompts come from the model's own sentence-transformers files, so
vectors match ``SentenceTransformer(model).encode(...)``; sentence-transformers itself is only the reference
the tests compare against. torch and transformers are imported on first use, never at plugin import.

The parts:

- :mod:`indexer_local.model`: finding the model's folder, reading its sentence-transformers config, pooling;
- :mod:`indexer_local.embedder`: :class:`LocalEmbedder`, device and precision choice, loading, batches;
- :mod:`indexer_local.kernels`: the faster CPU paths (oneDNN linear layers, blocked attention) and the CPU's flags;
- :mod:`indexer_local.int8`: int8 linear layers on CPUs; :mod:`indexer_local.gate`: the retrieval-quality gate
  that lets ``precision="auto"`` use them.
"""

from __future__ import annotations

from indexer.hookspecs import hookimpl
from indexer_local import gate, int8, kernels, model
from indexer_local.embedder import CPU_BATCH_TOKENS, DEFAULT_MODEL, DEVICES, PRECISIONS, LocalEmbedder

__all__ = ["CPU_BATCH_TOKENS", "DEFAULT_MODEL", "DEVICES", "PRECISIONS", "LocalEmbedder", "gate", "int8", "kernels",
           "model", "register_embedders"]


@hookimpl(trylast=True)
def register_embedders(register):
    register("local", LocalEmbedder)
