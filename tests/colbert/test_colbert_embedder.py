"""The ColBERT embedder: per-token vectors as colbert-ai makes them, and a Hub model found in the local cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("ragatouille")
pytest.importorskip("indexer_colbert")

from colbert_helpers import colbert_model  # noqa: E402, F401  (a fixture)

from indexer.errors import ConfigError
from indexer.types import Chunk
from indexer_colbert.embedder import ColBERTEmbedder


def test_token_vectors_of_chunks_and_queries(colbert_model):
    emb = ColBERTEmbedder(colbert_model)
    emb.check()
    info = emb.info
    assert (info.kind, info.dimension, info.max_tokens, info.pooling) == ("multivector", 128, 128, "colbert")
    assert emb.content_token_limit() == 125
    texts = ["The 100 metres is a sprint race.", "Aspirin, also known as acetylsalicylic acid, is a medication"]
    tok = emb.tokenizer()
    tok.no_padding()  # the chunker counts tokens with a copy that neither pads nor truncates
    chunks = [Chunk(str(i), str(i), 0, t, len(tok.encode(t, add_special_tokens=False).ids), 0, len(t), "")
              for i, t in enumerate(texts)]
    vectors = emb.embed(chunks)
    for chunk, v in zip(chunks, vectors):
        punctuation = sum(1 for t in tok.encode(chunk.text, add_special_tokens=False).tokens if t in ".,")
        assert v.shape == (chunk.token_count + 3 - punctuation, 128)  # [CLS] [D] ... [SEP], punctuation masked
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    alone = emb.embed(chunks[1:])[0]
    assert np.allclose(alone, vectors[1], atol=1e-5)  # a chunk's vectors do not depend on its batch
    short, long_ = emb.embed_queries(["sprint race", " ".join(["word"] * 40)])
    assert short.shape == (32, 128) and long_.shape == (54, 128)  # [MASK]-padded as RAGatouille's searcher does


def test_a_hub_model_is_found_in_the_local_cache(colbert_model, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--colbert-ir--colbertv2.0" / "snapshots" / "0123abc"
    shutil.copytree(colbert_model, snapshot)
    (tmp_path / "hub" / "models--colbert-ir--colbertv2.0" / "refs").mkdir()
    (tmp_path / "hub" / "models--colbert-ir--colbertv2.0" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    emb = ColBERTEmbedder("colbert-ir/colbertv2.0")
    emb.check()
    assert emb.path == snapshot and emb.info.revision == "0123abc"
    assert emb.info.fingerprint == ColBERTEmbedder(colbert_model).info.fingerprint

    with pytest.raises(ConfigError, match="nor in the local Hugging Face cache.*huggingface-cli download"):
        ColBERTEmbedder("colbert-ir/not-downloaded").check()
    with pytest.raises(ConfigError, match="not a ColBERT checkpoint"):
        ColBERTEmbedder(str(tmp_path)).check()
