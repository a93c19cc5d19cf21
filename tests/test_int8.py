"""int8 on CPUs: the quantised model, the retrieval-quality gate that lets ``auto`` use it, and a table built with
it end to end (real MiniLM, real LanceDB)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import indexer
import indexer_local
from conftest import DEMO_CORPUS
from indexer.cli import cli
from indexer.errors import ConfigError
from indexer.retrieval import SearchSettings, open_index
from indexer.types import Chunk
from indexer_local import LocalEmbedder, gate, int8

torch = pytest.importorskip("torch")
if int8.int8_engine() is None:
    pytest.skip("this torch build has no x86 int8 kernels", allow_module_level=True)

# A CPU without native bf16 but with VNNI (an Ice Lake Xeon, a Zen 3): where auto puts int8 on trial.
NO_BF16 = frozenset({"avx2", "avx512f", "avx512_vnni"})


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(indexer_local.kernels, "cpu_flags", lambda: NO_BF16)


def _demo_chunks(emb: LocalEmbedder, n: int) -> list[Chunk]:
    docs = [json.loads(line) for line in DEMO_CORPUS.read_text().splitlines()[:n]]
    tok = emb.tokenizer()
    out = []
    for d in docs:
        ids = tok.encode(d["text"], add_special_tokens=False).ids[:200]
        out.append(Chunk(f"{d['id']}#0", d["id"], 0, d["text"], len(ids), 0, len(d["text"]), "h", token_ids=ids))
    return out


def test_int8_runs_quantised_layers_close_to_fp32(model_path):
    emb = LocalEmbedder(model_path, precision="int8", device="cpu")
    net = emb._load()
    layer = net.encoder.layer[0]
    # A silent fallback to fp32 layers would pass the accuracy check below, without the speed.
    assert {type(m).__name__ for m in (layer.attention.self.query, layer.intermediate.dense, layer.output.dense)} \
        == {"Int8Linear"}
    assert emb.info.precision == "int8"
    exact = LocalEmbedder(model_path, precision="exact", device="cpu")
    chunks = _demo_chunks(emb, 40)
    a, b = emb.embed(chunks), exact.embed(chunks)
    cos = (a * b).sum(1)
    assert 0.98 <= cos.min() < 0.99999, cos.min()  # int8 really ran, and stayed close
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_int8_off_the_cpu_fails_before_work(model_path, device):
    with pytest.raises(ConfigError, match="int8 runs on CPUs only.*--device cpu"):
        LocalEmbedder(model_path, precision="int8", device=device).check()


def test_int8_without_kernels_fails_before_work(model_path, monkeypatch):
    monkeypatch.setattr(int8, "int8_engine", lambda: None)
    with pytest.raises(ConfigError, match="int8 kernels.*--precision exact"):
        LocalEmbedder(model_path, precision="int8").check()


def test_int8_on_auto_device_runs_on_the_cpu(model_path):
    assert LocalEmbedder(model_path, precision="int8")._choose() == ("cpu", "int8")


@pytest.mark.parametrize("flags, on_trial", [
    (NO_BF16, True),  # int8 against fp32
    ({"avx2"}, True),  # no VNNI: 7-bit activations, still faster than fp32
    (set(), False),  # no int8 kernels worth having
    ({"avx512f", "avx512_vnni", "avx512_bf16"}, False),  # Zen 4/5: int8 0.95x AVX-512 bf16 on an idle Zen 5
    ({"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}, False),  # AMX bf16 is faster than fbgemm int8
])
def test_auto_puts_int8_on_trial_only_where_it_is_faster(model_path, monkeypatch, flags, on_trial):
    monkeypatch.setattr(indexer_local.kernels, "cpu_flags", lambda: frozenset(flags))
    assert bool(LocalEmbedder(model_path, device="cpu").sample_size()) == on_trial
    for precision in ("exact", "bf16", "int8", "fast"):
        assert LocalEmbedder(model_path, device="cpu", precision=precision).sample_size() == 0


def test_top_k_agreement():
    rng = np.random.default_rng(0)
    docs, queries = rng.normal(size=(40, 8)), rng.normal(size=(5, 8))
    assert gate.top_k_agreement(queries, docs, queries, docs) == 1.0
    assert gate.top_k_agreement(queries, docs, queries, docs[::-1]) < 0.5  # other documents ranked first
    assert gate.top_k_agreement(queries, docs, queries * 2, docs + 1e-9) == 1.0  # same rankings, other scale


def test_a_query_is_a_sentence_of_the_chunk():
    assert gate.query_from("Paris\n\nParis is the capital of France. It has 2 million people.") \
        == "Paris Paris is the capital of France."
    assert gate.query_from("Ok. Short. The third sentence has enough words.") == "The third sentence has enough words."
    assert len(gate.query_from("word " * 100).split()) == 24


def test_the_gate_refuses_a_sample_too_small_to_judge(model_path, cpu_without_bf16):
    emb = LocalEmbedder(model_path, device="cpu")
    report = emb.settle(lambda: _demo_chunks(emb, gate.MIN_SAMPLE - 1))
    assert not report["passed"] and "fewer than" in report["summary"] and emb.info.precision == "fp32"


def _build(tmp_path, model_path, docs: int):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(DEMO_CORPUS.read_text().splitlines()[:docs]) + "\n")
    db = tmp_path / "db"
    return indexer.build(str(corpus), db=str(db), model=model_path, title_field="title", table="t", progress=False), db


@pytest.mark.slow
@pytest.mark.parametrize("passes", [True, False])
def test_auto_takes_int8_only_when_the_gate_passes(tmp_path, model_path, cpu_without_bf16, monkeypatch, passes):
    seen = []
    real = gate.top_k_agreement
    monkeypatch.setattr(gate, "top_k_agreement", lambda *a: seen.append(real(*a)) or seen[-1])
    # the real measurement decides against a threshold set on either side of it
    monkeypatch.setattr(gate, "MIN_AGREEMENT", 0.0 if passes else 1.01)
    summary, db = _build(tmp_path, model_path, docs=80)
    assert len(seen) == 1 and 0.5 < seen[0] <= 1.0  # measured once, on the corpus
    want = "int8" if passes else "fp32"
    assert summary.precision == want and summary.gate["passed"] is passes
    assert summary.gate["documents"] == summary.chunks and summary.gate["agreement"] == round(seen[0], 4)
    assert f"int8 {'used' if passes else 'not used'}: top-10 agreement" in summary.render()

    info = CliRunner().invoke(cli, ["info", "--db", str(db)])
    assert info.exit_code == 0, info.output
    assert f"normalised, {want}" in info.output and f"precision int8 {'used' if passes else 'not used'}" in info.output
    meta = indexer.info(str(db))[0]["meta"]
    assert meta["model"]["precision"] == want and meta["embedder"]["gate"]["passed"] is passes

    # Queries are embedded as the chunks were: with the precision the build settled on, not auto's default.
    index = open_index(str(db))
    assert index.embedder.info.precision == want
    query = "a painter of the Italian Renaissance"
    hit = index.search([query], k=1, settings=SearchSettings("dense"))[0][0]  # a cosine, not a fused score
    stored = _vector(db, hit.id)
    same = LocalEmbedder(model_path, device="cpu", precision=want).embed_queries([query])[0]
    other = LocalEmbedder(model_path, device="cpu", precision="fp32" if passes else "int8").embed_queries([query])[0]
    assert abs(hit.score - float(same @ stored)) < 1e-5
    assert abs(float(other @ stored) - float(same @ stored)) > 1e-4  # the check above tells the two apart

    # A later build of the table keeps its verdict, even where a new measurement would decide otherwise.
    monkeypatch.setattr(gate, "MIN_AGREEMENT", 1.01 if passes else 0.0)
    again, _ = _build(tmp_path, model_path, docs=80)
    assert len(seen) == 1 and again.precision == want and again.gate["passed"] is passes
    assert "when the table was first built" in again.render()


def _vector(db, chunk_id: str) -> np.ndarray:
    import lancedb

    rows = lancedb.connect(str(db)).open_table("t").to_arrow().to_pylist()
    return np.asarray(next(r["vector"] for r in rows if r["id"] == chunk_id), dtype=np.float32)
