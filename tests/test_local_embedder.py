"""The local dense embedder against sentence-transformers, on the real MiniLM model and on tiny random models."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from indexer.errors import ConfigError
from indexer.types import Chunk
from indexer_local import LocalEmbedder

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")

WORDS = (
    "the index keeps vectors of every chunk so that a search finds passages by meaning rather than by words; "
    "Zürich, naïve café, 東京, emoji 🙂 and numbers like 3.14159 or 2,048 appear in real text too."
).split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # Lengths from a few tokens to past the model's 256-token limit, so truncation is exercised.
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 3, 8, 20, 60, 120, 300]))) for _ in range(n)]


def _chunks(embedder: LocalEmbedder, texts: list[str], with_ids: bool | None = None) -> list[Chunk]:
    tok = embedder.tokenizer()
    out = []
    for i, text in enumerate(texts):
        ids = tok.encode(text, add_special_tokens=False).ids
        give = (i % 2 == 0) if with_ids is None else with_ids
        out.append(Chunk(f"d#{i}", "d", i, text, len(ids), 0, len(text), "h", token_ids=ids if give else None))
    return out


def _row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def reference(model_path):
    model = st.SentenceTransformer(model_path, device="cpu")
    texts = _texts(40)
    return texts, model.encode(texts, batch_size=16, convert_to_numpy=True)


@pytest.fixture(scope="module")
def exact(model_path):
    return LocalEmbedder(model_path, precision="exact", device="cpu")


def test_registered_as_local():
    import indexer_local

    seen = {}
    indexer_local.register_embedders(register=lambda name, cls: seen.setdefault(name, cls))
    assert seen == {"local": LocalEmbedder}


def test_exact_matches_sentence_transformers_in_input_order(exact, reference):
    texts, ref = reference
    order = list(range(len(texts)))
    random.Random(1).shuffle(order)
    chunks = _chunks(exact, [texts[i] for i in order])
    assert any(c.token_ids is None for c in chunks) and any(c.token_ids is not None for c in chunks)
    vecs = exact.embed(chunks)
    assert vecs.dtype == np.float32 and vecs.shape == (len(texts), 384)
    cos = _row_cos(vecs, ref[order])
    assert cos.min() >= 0.9999, cos.min()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert exact.info.precision == "fp32" and exact.info.normalize and exact.info.pooling == "mean"


@pytest.mark.parametrize("precision", ["exact", "bf16"])
def test_cpu_fast_path_is_in_place(model_path, precision):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN")
    net = LocalEmbedder(model_path, precision=precision, device="cpu")._load()
    layer = net.encoder.layer[0]
    # A silent fallback to the stock layers would still pass the accuracy tests, only 1.2-1.5x slower.
    assert {type(m).__name__ for m in (layer.intermediate, layer.output, layer.attention.self.query)} == {"PackedLinear"}
    if net._supports_attention_backend:  # transformers 5; BERT in transformers 4 has its own attention modules
        from indexer_local.kernels import cpu_flags

        want = "indexer_blocked_cpu" if precision == "bf16" and "amx_bf16" not in cpu_flags() else "sdpa"
        assert net.config._attn_implementation == want


@pytest.mark.parametrize("flags, want", [({"avx512_bf16"}, "indexer_blocked_cpu"),
                                         ({"avx512_bf16", "amx_bf16"}, "sdpa")])
def test_bf16_attention_follows_the_cpu(model_path, monkeypatch, flags, want):
    import indexer_local

    monkeypatch.setattr(indexer_local.kernels, "cpu_flags", lambda: frozenset(flags))
    net = LocalEmbedder(model_path, precision="bf16", device="cpu")._load()
    if not net._supports_attention_backend:
        pytest.skip("BERT in transformers 4 has its own attention modules")
    assert net.config._attn_implementation == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["padding", "general", "additive", "none"])
def test_blocked_attention_matches_sdpa(dtype, mask_kind):
    from indexer_local.kernels import blocked_attention

    g = torch.Generator().manual_seed(3)
    batch, heads, length, size = 7, 4, 33, 16  # several blocks, odd sizes
    q, k, v = (torch.randn(batch, heads, length, size, generator=g).to(dtype) for _ in range(3))
    lengths = torch.tensor([33, 30, 1, 17, 33, 5, 20])
    mask = {
        "padding": (torch.arange(length)[None, :] < lengths[:, None])[:, None, None, :].expand(batch, 1, length, length),
        "general": torch.rand(batch, 1, length, length, generator=g) > 0.3,
        "none": None,
    }.get(mask_kind)
    if mask_kind == "general":
        mask[..., 0] = True  # every query sees at least one key
    if mask_kind == "additive":
        mask = torch.randn(batch, 1, length, length, generator=g).to(dtype)
    import indexer_local

    block, indexer_local.kernels._ATTENTION_BLOCK = indexer_local.kernels._ATTENTION_BLOCK, heads * length * length * 3
    try:
        got, weights = blocked_attention(None, q, k, v, mask, scaling=0.3)
    finally:
        indexer_local.kernels._ATTENTION_BLOCK = block
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(1, 2)
    assert weights is None and got.shape == (batch, length, heads, size)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def test_token_ids_and_text_give_the_same_vectors(exact):
    texts = _texts(12, seed=5)
    a = exact.embed(_chunks(exact, texts, with_ids=True))
    b = exact.embed(_chunks(exact, texts, with_ids=False))
    assert _row_cos(a, b).min() >= 0.99999


def test_content_token_limit_and_special_tokens(exact):
    assert exact.content_token_limit() == 256 - 2
    tok = exact.tokenizer()
    long = " ".join(["word"] * 400)
    ids = exact.input_ids(_chunks(exact, [long, "hi"], with_ids=True))
    assert len(ids[0]) == 256 and ids[0][0] == tok.token_to_id("[CLS]") and ids[0][-1] == tok.token_to_id("[SEP]")
    assert ids[1] == tok.encode("hi").ids  # exactly what the post-processor produces
    # The tokenizer handed to the chunker counts every token: the 128-token truncation in tokenizer.json is off.
    assert len(tok.encode(long, add_special_tokens=False).ids) == 400


@pytest.mark.parametrize("precision", ["auto", "fast", "bf16", "fp16", "fp32"])
def test_every_precision_runs_on_cpu(model_path, reference, precision):
    texts, ref = reference
    emb = LocalEmbedder(model_path, precision=precision, device="cpu")
    if precision == "fp16":  # emulated on most CPUs, hence slow: a few rows show that it works
        texts, ref = texts[:8], ref[:8]
    try:
        vecs = emb.embed(_chunks(emb, texts))
    except RuntimeError as e:  # a torch build without CPU kernels for this dtype
        pytest.skip(f"{precision} does not run on this CPU: {e}")
    cos = _row_cos(vecs, ref).min()
    assert cos >= (0.9999 if emb.info.precision == "fp32" else 0.999), cos
    assert emb.info.precision in ("fp32", "bf16", "fp16")
    if precision in ("bf16", "fp16", "fp32"):
        assert emb.info.precision == precision
    assert np.isfinite(vecs).all()


def test_batches_respect_the_token_budget(model_path):
    emb = LocalEmbedder(model_path, precision="exact", device="cpu", batch_tokens=600)
    texts = _texts(30, seed=3)
    chunks = _chunks(emb, texts)
    seen = []
    inner = emb.embed_batch

    def spy(batch):
        seen.append([c.token_count for c in batch])
        return inner(batch)

    emb.embed_batch = spy
    vecs = emb.embed(chunks)
    assert len(seen) > 1 and sum(len(b) for b in seen) == len(chunks)
    for counts in seen:
        assert len(counts) == 1 or len(counts) * (max(counts) + 2) <= 600
    whole = LocalEmbedder(model_path, precision="exact", device="cpu").embed(chunks)
    assert _row_cos(vecs, whole).min() >= 0.99999


def test_the_default_budget_follows_the_device(model_path):
    from indexer_local import CPU_BATCH_TOKENS

    assert LocalEmbedder(model_path, device="cpu").token_budget() == CPU_BATCH_TOKENS
    assert LocalEmbedder(model_path, device="cpu", batch_tokens=600).token_budget() == 600
    gpu = LocalEmbedder(model_path, device="cuda")
    assert gpu.token_budget() == gpu.default_batch_tokens > CPU_BATCH_TOKENS  # decided without loading the model
    assert gpu._net is None


# ----------------------------------------------------------------------------------------------------------------
# Tiny random models: configuration is read from the model's own files
# ----------------------------------------------------------------------------------------------------------------


def _tiny_model(folder, model_path, *, pooling="cls", normalize=False, prompts=None, include_prompt=True, seed=0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(f"{model_path}/{name}", folder / name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "include_prompt": include_prompt,
    }))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    if prompts:
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return folder


def test_pooling_and_normalisation_come_from_the_model_config(tmp_path, model_path):
    folder = _tiny_model(tmp_path / "tiny", model_path, pooling="cls", normalize=False)
    emb = LocalEmbedder(str(folder), precision="exact", device="cpu")
    emb.check()
    info = emb.info
    assert (info.pooling, info.normalize, info.max_tokens, info.dimension) == ("cls", False, 64, 32)
    assert emb.content_token_limit() == 62 and info.revision == "local"
    texts = _texts(10, seed=7)
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    vecs = emb.embed(_chunks(emb, texts))
    assert _row_cos(vecs, ref).min() >= 0.9999
    np.testing.assert_allclose(vecs, ref, rtol=1e-4, atol=1e-5)  # unnormalised: magnitudes match too


@pytest.mark.parametrize("include_prompt", [True, False])
def test_prompts_prefix_both_token_ids_and_text(tmp_path, model_path, include_prompt):
    prompts = {"query": "query: ", "document": "passage: "}
    folder = _tiny_model(tmp_path / "tiny", model_path, pooling="mean", normalize=True, prompts=prompts,
                         include_prompt=include_prompt)
    emb = LocalEmbedder(str(folder), precision="exact", device="cpu")
    assert emb.content_token_limit() == 64 - 2 - 2  # "passage" ":"
    texts = _texts(8, seed=11)
    ref_model = st.SentenceTransformer(str(folder), device="cpu")
    short = [" ".join(t.split()[:20]) for t in texts]  # within the limit, so truncation cannot differ
    docs = ref_model.encode(short, prompt_name="document", convert_to_numpy=True)
    assert _row_cos(emb.embed(_chunks(emb, short, with_ids=True)), docs).min() >= 0.9999
    assert _row_cos(emb.embed(_chunks(emb, short, with_ids=False)), docs).min() >= 0.9999
    queries = ref_model.encode(short[:3], prompt_name="query", convert_to_numpy=True)
    assert _row_cos(emb.embed_queries(short[:3]), queries).min() >= 0.9999
    literal = LocalEmbedder(str(folder), precision="exact", device="cpu", document_prompt="")
    assert literal.content_token_limit() == 62


def test_fingerprint_is_stable_and_follows_the_weights(tmp_path, model_path):
    folder = _tiny_model(tmp_path / "tiny", model_path)
    first = LocalEmbedder(str(folder)).info.fingerprint
    assert LocalEmbedder(str(folder)).info.fingerprint == first
    (folder / "README.md").write_text("notes do not change vectors")
    assert LocalEmbedder(str(folder)).info.fingerprint == first
    (folder / "indexer_finetune.json").write_text('{"time": 1}')  # indexer's own record beside a model
    assert LocalEmbedder(str(folder)).info.fingerprint == first
    _tiny_model(folder, model_path, seed=1)
    assert LocalEmbedder(str(folder)).info.fingerprint != first
    assert len(first) == 64


def test_check_errors(tmp_path):
    with pytest.raises(ConfigError, match="huggingface-cli download nobody/no-such-model"):
        LocalEmbedder("nobody/no-such-model").check()
    with pytest.raises(ConfigError, match="no config.json"):
        LocalEmbedder(str(tmp_path)).check()
    with pytest.raises(ConfigError, match="precision"):
        LocalEmbedder(str(tmp_path), precision="int3").check()
    with pytest.raises(ConfigError, match="device"):
        LocalEmbedder(str(tmp_path), device="tpu").check()


def test_check_and_tokenizer_stay_light(model_path):
    code = (
        "import sys; from indexer_local import LocalEmbedder\n"
        f"e = LocalEmbedder({model_path!r}); e.check(); e.tokenizer(); e.content_token_limit(); e.tokenizer_key()\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hub_id_resolves_to_the_packaged_copy(model_path):
    emb = LocalEmbedder("sentence-transformers/all-MiniLM-L6-v2")
    emb.check()
    assert emb.info.dimension == 384 and emb.info.max_tokens == 256
    assert emb.info.fingerprint == LocalEmbedder(model_path).info.fingerprint


def test_release_lets_go_of_the_model_and_the_next_embedding_loads_it_again(model_path):
    emb = LocalEmbedder(model_path, precision="exact", device="cpu")
    chunks = _chunks(emb, _texts(6, seed=5))
    before = emb.embed(chunks)
    emb.release()
    assert emb._net is None
    assert _row_cos(emb.embed(chunks), before).min() >= 0.99999
