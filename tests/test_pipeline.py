"""The core pipeline with fake components: resume, incremental runs, bad records, config errors, re-embed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fakes import FakePlugin, HashEmbedder, MemorySink
from indexer import pipeline
from indexer.config import BuildConfig
from indexer.errors import ConfigError
from indexer.hookspecs import hookimpl
from indexer.plugins import Host, make_plugin_manager, set_host


class Recorder:
    def __init__(self):
        self.summaries = []

    @hookimpl
    def run_finished(self, summary):
        self.summaries.append(summary)


@pytest.fixture
def host(monkeypatch):
    monkeypatch.setenv("INDEXER_PLUGINS", "local_executor")
    recorder = Recorder()
    h = Host(make_plugin_manager(extra_plugins=[FakePlugin, recorder]))
    h.recorder = recorder
    set_host(h)
    MemorySink.store.clear()
    MemorySink.metas.clear()
    HashEmbedder.embedded.clear()
    yield h
    set_host(None)


def corpus(tmp_path, data):
    path = tmp_path / "corpus.fake.json"
    path.write_text(json.dumps(data))
    return str(path)


def config(tmp_path, source, **kw):
    base = dict(source=source, chunker="words", embedder="hash", model="m1", sinks=["memory"],
                db=str(tmp_path / "db"), table="t", max_tokens=4, overlap=1, min_tokens=0, progress=False)
    base.update(kw)
    return BuildConfig(**base)


def words(n, tag):
    return " ".join(f"{tag}{i}" for i in range(n))


DATA = {
    "a": [{"id": "a1", "text": words(10, "x")}, {"id": "a2", "text": words(3, "y")}],
    "b": [{"id": "b1", "text": words(6, "z")}],
}


def test_build_writes_every_chunk_once(tmp_path, host):
    s = pipeline.build(config(tmp_path, corpus(tmp_path, DATA)))
    rows = MemorySink(db=str(tmp_path / "db"), table="t").rows()
    assert s.documents == 3 and s.chunks == len(rows) == len({r["id"] for r in rows})
    assert {r["doc_id"] for r in rows} == {"a1", "a2", "b1"}
    assert s.embedded_chunks == s.chunks and s.source_reads == 2
    assert host.recorder.summaries == [s]


def test_second_run_embeds_nothing(tmp_path, host):
    cfg = config(tmp_path, corpus(tmp_path, DATA))
    pipeline.build(cfg)
    HashEmbedder.embedded.clear()
    s = pipeline.build(cfg)
    assert s.embedded_chunks == 0 and s.shards_skipped == 2 and HashEmbedder.embedded == []


def test_editing_one_document_reembeds_only_its_chunks(tmp_path, host):
    src = corpus(tmp_path, DATA)
    cfg = config(tmp_path, src)
    pipeline.build(cfg)
    before = {r["id"]: r for r in MemorySink(db=cfg.db, table="t").rows()}
    edited = json.loads(json.dumps(DATA))
    edited["a"][0]["text"] = words(4, "new")  # 10 words → 4: the document loses chunks
    corpus(tmp_path, edited)
    HashEmbedder.embedded.clear()
    s = pipeline.build(cfg)
    after = {r["id"]: r for r in MemorySink(db=cfg.db, table="t").rows()}
    assert HashEmbedder.embedded == [words(4, "new")]
    assert s.embedded_chunks == 1 and s.reused_chunks == 1 and s.shards_skipped == 1
    assert [i for i in after if i.startswith("a1#")] == ["a1#0"]
    assert after["a1#0"]["text"] == words(4, "new")
    assert {i: r for i, r in after.items() if not i.startswith("a1#")} == {i: r for i, r in before.items() if not i.startswith("a1#")}


def test_reused_vectors_are_read_from_the_right_row_groups(tmp_path, host):
    # One shard of 12 documents in blocks of 2: its vector file holds 6 row groups. The edit removes an early
    # document, changes one in the middle and appends one, so every reused row moves to another row and most to
    # another row group; each reused vector must still be the one its text had. Two documents share a text, so
    # their chunks share content hashes (the rows after them must not shift).
    docs = [{"id": f"d{i}", "text": words(6, f"t{i}-")} for i in range(12)]
    docs[3]["text"] = docs[2]["text"]
    src = corpus(tmp_path, {"a": docs})
    cfg = config(tmp_path, src, block_docs=2)
    pipeline.build(cfg)
    vector_files = list((cfg.work_path / "vectors").rglob("*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in vector_files] == [6]
    edited = docs[:1] + docs[2:6] + [{"id": "d6", "text": words(6, "new-")}] + docs[7:] + [{"id": "d12", "text": words(9, "end-")}]
    corpus(tmp_path, {"a": edited})
    HashEmbedder.embedded.clear()
    s = pipeline.build(cfg)
    assert s.embedded_chunks == len(HashEmbedder.embedded) > 0 and s.reused_chunks == s.chunks - s.embedded_chunks > 0
    assert all(t.startswith(("new-", "end-")) for t in HashEmbedder.embedded)
    rows = MemorySink(db=cfg.db, table="t").rows()
    fresh = HashEmbedder(model="m1").embed_batch([SimpleNamespace(text=r["text"]) for r in rows])
    assert len(rows) == s.chunks and np.array_equal(np.stack([r["vector"] for r in rows]), fresh)


def test_previous_vectors_of_a_multivector_file(tmp_path):
    # Late-interaction (ColBERT) vector files hold one (tokens, dim) array per chunk; written in 3 row groups.
    from indexer.rows import multivector_array
    from indexer.state import StoredVectors, vector_schema

    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 3, 2, 5, 1, 4, 2)]
    schema = vector_schema(4, "multivector")
    path = tmp_path / "v.parquet"
    with pq.ParquetWriter(path, schema) as writer:
        for lo, hi in ((0, 3), (3, 5), (5, 7)):
            ids = [f"c{i}" for i in range(lo, hi)]
            writer.write_batch(pa.RecordBatch.from_arrays(
                [pa.array(ids), pa.array([f"h{i}" for i in range(lo, hi)]), multivector_array(arrays[lo:hi], 4)],
                schema=schema))
    with StoredVectors(path) as stored:
        assert len(stored) == 7 and "h6" in stored and "h7" not in stored
        got = stored.get(["h6", "h0", "h3", "h3", "h4"])
    assert all(np.array_equal(g, arrays[i]) for g, i in zip(got, (6, 0, 3, 3, 4)))
    with StoredVectors(tmp_path / "missing.parquet") as none:
        assert len(none) == 0 and "h0" not in none and none.get([]) == []


def test_shard_gone_from_source_is_removed(tmp_path, host):
    cfg = config(tmp_path, corpus(tmp_path, DATA))
    pipeline.build(cfg)
    corpus(tmp_path, {"a": DATA["a"]})
    s = pipeline.build(cfg)
    assert s.shards_removed == 1
    assert {r["doc_id"] for r in MemorySink(db=cfg.db, table="t").rows()} == {"a1", "a2"}


def test_bad_records_are_reported_and_good_ones_kept(tmp_path, host):
    data = {"a": [{"id": "ok", "text": "fine text"}, {"id": "e", "text": ""}, {"id": "w", "text": "  \n"},
                  {"id": "n", "text": 7}, {"id": "m"}, {"error": "invalid JSON: boom"}, {"id": "ok", "text": "again"}]}
    s = pipeline.build(config(tmp_path, corpus(tmp_path, data)))
    reasons = {b.record.split(" ")[0]: b.reason for b in s.bad}
    assert s.documents == 1
    assert reasons["e"] == "empty text" and reasons["w"] == "text is only whitespace"
    assert "int, not a string" in reasons["n"] and "missing text" in reasons["m"]
    assert "invalid JSON" in reasons["row"] and "duplicate id" in reasons["ok"]
    assert "e" in s.render() and "duplicate id" in s.render()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"embedder": "nope"}, "unknown embedder 'nope'; known embedders: hash"),
        ({"chunker": "nope"}, "unknown chunker 'nope'; known chunkers: words"),
        ({"sinks": ["nope"]}, "unknown sink 'nope'; known sinks: memory, write-only"),
        ({"executor": "nope"}, "unknown executor 'nope'; known executors: local"),
        ({"model": "missing-model"}, "model missing-model not found"),
        ({"source": "/no/such/file.fake.json"}, "does not exist"),
        ({"source": "/no/such/thing.xyz"}, "no source can read"),
        ({"batch_tokens": 0}, "--batch-tokens must be at least 1 (got 0)"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, host, change, message):
    cfg = config(tmp_path, corpus(tmp_path, DATA)).replace(**change)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline.build(cfg)
    assert HashEmbedder.embedded == [] and MemorySink.store == {}


def test_another_model_into_the_same_table_is_refused(tmp_path, host):
    src = corpus(tmp_path, DATA)
    pipeline.build(config(tmp_path, src))
    with pytest.raises(ConfigError, match="another model"):
        pipeline.build(config(tmp_path, src, model="m2"))


def test_default_table_is_one_per_model(tmp_path, host):
    src = corpus(tmp_path, DATA)
    s1 = pipeline.build(config(tmp_path, src, table=None))
    s2 = pipeline.build(config(tmp_path, src, table=None, model="m2"))
    assert s1.table != s2.table and s1.table.startswith("m1-") and s2.table.startswith("m2-")


def test_reembed_reads_no_source_and_chunks_nothing(tmp_path, host):
    src = corpus(tmp_path, DATA)
    first = pipeline.build(config(tmp_path, src))
    (tmp_path / "corpus.fake.json").unlink()  # the source is gone: a re-embed must not need it
    s = pipeline.reembed(config(tmp_path, "", model="m2", table="t2"), from_table="t")
    assert s.source_reads == 0 and s.chunked_documents == 0
    assert s.chunks == first.chunks and s.embedded_chunks == first.chunks
    old = {r["id"] for r in MemorySink(db=str(tmp_path / "db"), table="t").rows()}
    new = {r["id"] for r in MemorySink(db=str(tmp_path / "db"), table="t2").rows()}
    assert old == new


def test_search_uses_the_tables_embedder(tmp_path, host):
    from indexer.retrieval import open_index

    cfg = config(tmp_path, corpus(tmp_path, DATA))
    pipeline.build(cfg)
    index = open_index(cfg.db, "t", sink_name="memory")
    hits = index.search([words(3, "y")], k=2)[0]
    assert hits[0].doc_id == "a2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    by_doc = index.search([words(4, "x")], k=3, by_doc=True)[0]
    assert len({h.doc_id for h in by_doc}) == len(by_doc)


def test_trec_round_trip_with_spaces_in_ids(tmp_path):
    from indexer.components import Hit
    from indexer.metrics import evaluate, read_run
    from indexer.retrieval import write_trec

    run = tmp_path / "run.trec"
    write_trec({"q 1": [Hit("Sistine Chapel#0", "Sistine Chapel", 0.9), Hit("Rome#0", "Rome", 0.5)]}, run, by_doc=True)
    assert read_run(run) == {"q 1": [("Sistine Chapel", 0.9), ("Rome", 0.5)]}
    m = evaluate({"q 1": {"Rome": 1}}, read_run(run))
    assert m["mrr@10"] == 0.5 and m["recall@10"] == 1.0


def test_search_refuses_a_sink_that_cannot_search(tmp_path, host):
    from indexer.retrieval import open_index

    cfg = config(tmp_path, corpus(tmp_path, DATA), sinks=["write-only"])
    pipeline.build(cfg)
    with pytest.raises(ConfigError, match="sink 'write-only' stores rows but cannot search them"):
        open_index(cfg.db, "t", sink_name="write-only")
