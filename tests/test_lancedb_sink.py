"""The lancedb sink against real LanceDB in a temporary folder, with random unit vectors (no model needed)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pyarrow as pa
import pytest

from indexer.errors import ConfigError
from indexer.plugins import get_host
from indexer.rows import embedded_schema
from indexer.types import ModelInfo

DIM = 16
MODEL = ModelInfo(
    name="test/model", revision="local", fingerprint="f" * 16, dimension=DIM, pooling="mean", normalize=True,
    max_tokens=256,
)
META = {"model": asdict(MODEL), "embedder": {"name": "local", "batch_tokens": 1024}, "chunking": {"max_tokens": 64}}


@pytest.fixture(scope="module")
def sink_cls():
    return get_host().component("sink", "lancedb")


@pytest.fixture
def make_sink(sink_cls, tmp_path):
    def make(table="chunks", **options):
        return sink_cls(db=str(tmp_path / "db"), table=table, **options)

    return make


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(shard: str, n: int, *, seed: int = 0, start: int = 0, text=None) -> pa.RecordBatch:
    ids = range(start, start + n)
    return pa.RecordBatch.from_pydict(
        {
            "id": [f"{shard}/d{i}#0" for i in ids],
            "doc_id": [f"{shard}/d{i}" for i in ids],
            "chunk_index": [i % 3 for i in ids],
            "text": [text(i) if text else f"passage {i} of {shard}" for i in ids],
            "token_count": [10 + i for i in ids],
            "char_start": [i for i in ids],
            "char_end": [100 + i for i in ids],
            "content_hash": [f"h{seed}-{i}" for i in ids],
            "metadata": [json.dumps({"n": i, "shard": shard}) if i % 2 else None for i in ids],
            "shard": [shard] * n,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(unit_vectors(n, seed).ravel()), DIM),
        },
        schema=embedded_schema(DIM),
    )


def stored(sink) -> dict[str, dict]:
    table = sink._table().to_arrow()
    return {r["id"]: r for r in table.to_pylist()}


def test_round_trip_keeps_every_column(make_sink):
    batch = rows("a", 7, seed=1)
    with make_sink() as sink:
        sink.open(MODEL, META)
        assert sink.write_shard("a", iter([batch.slice(0, 4), batch.slice(4)])) == 7
    got = stored(make_sink())
    assert sorted(got) == sorted(batch.column("id").to_pylist())
    for row in batch.to_pylist():
        back = got[row["id"]]  # the stored row also has the metadata fields as columns (tested below)
        assert {k: back[k] for k in row if k != "vector"} == {k: v for k, v in row.items() if k != "vector"}
        np.testing.assert_array_equal(np.array(back["vector"], np.float32), np.array(row["vector"], np.float32))


def test_rewriting_a_shard_replaces_exactly_that_shard(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 10, seed=1)])
        sink.write_shard("b", [rows("b", 5, seed=2)])
        before_b = stored(sink)
        # Shard a shrinks to 6 documents, two of them changed.
        new_a = rows("a", 6, seed=3, text=lambda i: f"edited {i}")
        assert sink.write_shard("a", [new_a]) == 6
        after = stored(sink)
    assert sink.count() == 11
    a_ids = {i for i, r in after.items() if r["shard"] == "a"}
    assert a_ids == set(new_a.column("id").to_pylist())
    assert "a/d9#0" not in after
    assert all(after[i]["text"].startswith("edited") for i in a_ids)
    assert {i: r for i, r in after.items() if r["shard"] == "b"} == {
        i: r for i, r in before_b.items() if r["shard"] == "b"
    }


def test_writing_the_same_shard_twice_is_idempotent(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 8)])
        first = stored(sink)
        sink.write_shard("a", [rows("a", 8)])
        assert stored(sink) == first
        assert sink.count() == 8


def test_empty_shard_deletes_its_rows(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 5)])
        sink.write_shard("b", [rows("b", 3)])
        assert sink.write_shard("a", iter([])) == 0
        assert {r["shard"] for r in stored(sink).values()} == {"b"}
        assert sink.count() == 3


def test_shard_keys_with_quotes_are_escaped(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("it's", [rows("it's", 4)])
        sink.write_shard("other", [rows("other", 2)])
        sink.write_shard("it's", [rows("it's", 1)])
        assert sink.count() == 3


def test_a_failing_batch_stream_leaves_the_shard_as_it_was(make_sink):
    def broken(shard="a"):
        yield rows(shard, 2, seed=9)
        raise RuntimeError("embedder died")

    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 5)])
        before = stored(sink)
        with pytest.raises(Exception, match="embedder died"):
            sink.write_shard("a", broken())
        assert stored(sink) == before
        # a shard with no rows yet is appended, not merged: a failing stream must add nothing either
        with pytest.raises(Exception, match="embedder died"):
            sink.write_shard("new", broken("new"))
        assert stored(sink) == before


def test_rows_labelled_with_another_shard_are_refused(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        with pytest.raises(ValueError, match="labelled with shard"):
            sink.write_shard("a", [rows("b", 2)])
        assert sink.count() == 0


def test_a_table_of_another_model_is_refused(make_sink):
    with make_sink(table="mine") as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 2)])
    other = replace(MODEL, name="other/model", fingerprint="0" * 16)
    with pytest.raises(ConfigError) as err:
        make_sink(table="mine").open(other, {"model": asdict(other)})
    message = str(err.value)
    assert "table mine holds vectors of model test/model (fingerprint ffffffffffffffff)" in message
    assert "pass another --table or leave --table out" in message
    wider = replace(MODEL, dimension=DIM * 2)
    with pytest.raises(ConfigError, match="16-dimensional"):
        make_sink(table="mine").open(wider, {"model": asdict(wider)})


def test_meta_round_trips_through_tables_and_read_meta(make_sink, sink_cls, tmp_path):
    with make_sink(table="t1") as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 3)])
    with make_sink(table="t2") as sink:
        sink.open(MODEL, {**META, "chunking": {"max_tokens": 128}})
    # The core keeps its work directory inside the db folder; it must not show up as a table.
    (tmp_path / "db" / "_indexer").mkdir()
    listed = {t["table"]: t for t in make_sink().tables()}
    assert set(listed) == {"t1", "t2"}
    assert listed["t1"]["rows"] == 3 and listed["t2"]["rows"] == 0
    assert listed["t1"]["meta"] == META
    assert sink_cls.read_meta(str(tmp_path / "db"), "t1") == META
    assert ModelInfo(**sink_cls.read_meta(str(tmp_path / "db"), "t2")["model"]) == MODEL
    with pytest.raises(ConfigError, match="no table nope"):
        sink_cls.read_meta(str(tmp_path / "db"), "nope")

    # Reopening with new settings updates the record; the model check still passes.
    with make_sink(table="t1") as sink:
        sink.open(MODEL, {**META, "source": "corpus.jsonl"})
    assert sink_cls.read_meta(str(tmp_path / "db"), "t1")["source"] == "corpus.jsonl"
    assert make_sink(table="t1").count() == 3

    assert make_sink().delete_table("t2") is True
    assert make_sink().delete_table("t2") is False
    assert [t["table"] for t in make_sink().tables()] == ["t1"]


def brute_force(table_vectors, ids, queries, k):
    scores = queries @ table_vectors.T
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(ids[j], float(row[j])) for j in order])
    return out


def test_flat_search_equals_brute_force_cosine(make_sink):
    batches = [rows("a", 120, seed=1), rows("b", 80, seed=2)]
    with make_sink() as sink:
        sink.open(MODEL, META)
        for b in batches:
            sink.write_shard(b.column("shard")[0].as_py(), [b])
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    vecs = np.concatenate([unit_vectors(120, 1), unit_vectors(80, 2)])
    # Unnormalised queries: cosine must not care about length.
    queries = unit_vectors(50, 7) * np.linspace(0.5, 3, 50, dtype=np.float32)[:, None]
    expected = brute_force(vecs, ids, queries / np.linalg.norm(queries, axis=1, keepdims=True), 10)
    sink = make_sink()
    got = sink.search(queries, k=10)
    assert len(got) == 50
    for hits, want in zip(got, expected):
        assert [h.id for h in hits] == [i for i, _ in want]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], atol=1e-5)
    one = sink.search(queries[3], k=3)
    assert [h.id for h in one[0]] == [i for i, _ in expected[3][:3]]

    hit = next(h for h in got[0] if h.metadata)
    n = int(hit.doc_id.rsplit("d", 1)[1])
    assert hit.metadata == {"n": n, "shard": hit.id.split("/")[0]}
    assert hit.text == f"passage {n} of {hit.id.split('/')[0]}"
    assert hit.chunk_index == n % 3

    only_b = sink.search(queries[:5], k=4, filter="shard = 'b'")
    assert all(h.id.startswith("b/") for hits in only_b for h in hits)
    assert all(len(hits) == 4 for hits in only_b)


def test_ann_index_is_built_over_the_threshold_and_not_rebuilt(make_sink, capfd):
    # fts=False: only the vector index is under test here
    with make_sink(ann_min_rows=300, fts=False) as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 200, seed=1)])
    assert not make_sink()._table().list_indices()
    assert "index" not in capfd.readouterr().err  # below the threshold flat search is exact: nothing to say

    with make_sink(ann_min_rows=300, fts=False) as sink:
        sink.open(MODEL, META)
        sink.write_shard("b", [rows("b", 150, seed=2)])
    err = capfd.readouterr().err
    assert "built IVF_HNSW_SQ index on 'vector' over 350 rows (1 partition)" in err
    indexes = make_sink()._table().list_indices()
    assert [(i.index_type, i.columns) for i in indexes] == [("IvfHnswSq", ["vector"])]

    sink = make_sink(ann_min_rows=300, fts=False)
    sink.open(MODEL, META)
    sink.close()
    sink.close()
    assert "index" not in capfd.readouterr().err

    # A few new rows join the index incrementally; a table that doubled gets a fresh index.
    with make_sink(ann_min_rows=300, fts=False) as sink:
        sink.open(MODEL, META)
        sink.write_shard("c", [rows("c", 40, seed=3)])
    assert "added 40 new rows to its indexes" in capfd.readouterr().err
    table = make_sink()._table()
    assert table.index_stats(table.list_indices()[0].name).num_unindexed_rows == 0
    with make_sink(ann_min_rows=300, fts=False) as sink:
        sink.open(MODEL, META)
        sink.write_shard("d", [rows("d", 400, seed=4)])
    assert "built IVF_HNSW_SQ index on 'vector' over 790 rows" in capfd.readouterr().err
    with make_sink(ann_min_rows=300, fts=False) as sink:
        sink.open(MODEL, META)
        sink.write_shard("c", [])
        sink.write_shard("d", [])
    capfd.readouterr()

    # Through the index, the true nearest neighbour of a stored vector is itself, scored exactly.
    vecs = np.concatenate([unit_vectors(200, 1), unit_vectors(150, 2)])
    hits = make_sink().search(vecs[[0, 250]], k=5)
    assert [h[0].id for h in hits] == ["a/d0#0", "b/d50#0"]
    assert all(abs(h[0].score - 1.0) < 1e-5 for h in hits)
    expected = brute_force(vecs, [f"a/d{i}#0" for i in range(200)] + [f"b/d{i}#0" for i in range(150)],
                           vecs[[0, 250]], 5)
    for got, want in zip(hits, expected):
        scores = {i: s for i, s in want}
        for h in got:
            if h.id in scores:
                assert h.score == pytest.approx(scores[h.id], abs=1e-5)


def test_rows_per_partition_sets_the_index_partitions(make_sink, capfd):
    with make_sink(ann_min_rows=300, rows_per_partition=100) as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 350, seed=1)])
    assert "over 350 rows (4 partitions)" in capfd.readouterr().err
    table = make_sink()._table()
    plan = table.search(unit_vectors(1, 9)[0]).limit(3).analyze_plan()
    assert "partitions_ranked=4," in plan  # what lance built, not only what the sink asked for
    with pytest.raises(ConfigError, match="rows_per_partition"):
        make_sink(rows_per_partition=-1)


def test_full_text_search_finds_a_planted_word(make_sink, capfd):
    text = lambda i: "the quick brown fox" if i != 42 else "a zeppelin drifts over the harbour"  # noqa: E731
    with make_sink(fts=True) as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 100, text=text)])
    assert "built full-text index on 'text' over 100 rows" in capfd.readouterr().err
    hits = make_sink().search_text("zeppelin", k=5)
    assert [h.id for h in hits] == ["a/d42#0"]
    assert hits[0].score > 0 and hits[0].text.startswith("a zeppelin")

    # Rows written later become searchable once close() folds them into the index.
    with make_sink(fts=True) as sink:
        sink.open(MODEL, META)
        sink.write_shard("b", [rows("b", 3, text=lambda i: "zeppelin again")])
    assert {h.id for h in make_sink().search_text("zeppelin", k=10)} == {"a/d42#0", "b/d0#0", "b/d1#0", "b/d2#0"}

    with make_sink(table="plain", fts=False) as plain:
        plain.open(MODEL, META)
    with pytest.raises(ConfigError, match="no full-text index"):
        make_sink(table="plain").search_text("zeppelin")


def test_check_refuses_a_file_and_bad_options(sink_cls, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        sink_cls(db=str(afile), table="t").check()
    with pytest.raises(ConfigError, match="is a file"):
        sink_cls(db=str(afile / "db"), table="t").check()
    with pytest.raises(ConfigError, match="table name"):
        sink_cls(db=str(tmp_path / "db"), table="a b").check()
    with pytest.raises(ConfigError, match="index_type"):
        sink_cls(db=str(tmp_path / "db"), table="t", index_type="ivf_magic").check()
    with pytest.raises(ConfigError, match="ann_min_rows"):
        sink_cls(db=str(tmp_path / "db"), table="t", ann_min_rows="lots")
    sink_cls(db=str(tmp_path / "new" / "db"), table="t", ann_min_rows="1_000", fts="true").check()


def test_check_refuses_a_read_only_parent(sink_cls, tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ConfigError, match="not writable"):
            sink_cls(db=str(locked / "db"), table="t").check()
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------------------------------------------
# Metadata as typed columns, filters, the full-text index's options


def with_metadata(shard: str, objects: list, **kw) -> pa.RecordBatch:
    batch = rows(shard, len(objects), **kw)
    column = pa.array([json.dumps(o) if o is not None else None for o in objects], pa.string())
    return batch.set_column(batch.schema.get_field_index("metadata"), "metadata", column)


def test_metadata_fields_become_typed_columns(make_sink):
    objects = [{"topic": "Science", "year": 1990, "score": 0.5, "open": True, "tags": ["a", "b"], "shard": "x",
                "extra": {"k": 1}},
               {"topic": "Arts", "year": 2001, "score": 2, "open": False, "tags": [], "shard": "y", "extra": None},
               None]
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [with_metadata("a", objects)])
    table = make_sink()._table()
    types = {f.name: f.type for f in table.schema}
    assert types["topic"] == pa.string() and types["year"] == pa.int64() and types["score"] == pa.float64()
    assert types["open"] == pa.bool_() and types["tags"] == pa.list_(pa.string()) and types["extra"] == pa.string()
    assert types["meta_shard"] == pa.string() and types["shard"] == pa.string()  # indexer's own column kept
    got = stored(make_sink())
    assert got["a/d0#0"]["year"] == 1990 and got["a/d1#0"]["score"] == 2.0 and got["a/d0#0"]["extra"] == '{"k": 1}'
    assert got["a/d0#0"]["meta_shard"] == "x" and got["a/d0#0"]["shard"] == "a"
    assert got["a/d2#0"]["topic"] is None
    assert [h.doc_id for h in make_sink().search(unit_vectors(1, 5), k=5, filter="year > 2000")[0]] == ["a/d1"]
    assert [h.doc_id for h in make_sink().search(unit_vectors(1, 5), k=5, filter="array_has(tags, 'b')")[0]] == ["a/d0"]


def test_a_field_that_appears_late_gets_its_column_and_a_value_that_does_not_fit_is_null(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        # "colour" first shows up in the shard's second batch, after the write fixed its schema
        sink.write_shard("a", [with_metadata("a", [{"year": 1}, {"year": 2}]),
                               with_metadata("a", [{"year": 3, "colour": "red"}], start=2)])
        sink.write_shard("b", [with_metadata("b", [{"year": "unknown", "colour": "blue"}])])
    got = stored(make_sink())
    assert got["a/d2#0"]["colour"] == "red" and got["b/d0#0"]["colour"] == "blue" and got["a/d0#0"]["colour"] is None
    assert got["b/d0#0"]["year"] is None  # int64 column: the word stays only in the JSON metadata
    assert json.loads(got["b/d0#0"]["metadata"]) == {"year": "unknown", "colour": "blue"}
    assert len(got) == 4


def test_check_filter_names_the_filterable_columns(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [with_metadata("a", [{"topic": "Science"}])])
    make_sink().check_filter("topic = 'Science' AND doc_id != 'x'")
    with pytest.raises(ConfigError, match=r"No field named topik.*filterable columns of table chunks: topic, id, "
                                          r"doc_id"):
        make_sink().check_filter("topik = 'Science'")
    with pytest.raises(ConfigError, match="--where"):
        make_sink().check_filter("topic = 'Science' OR")


def test_full_text_index_is_on_by_default_and_follows_its_options(make_sink, capfd):
    text = lambda i: ["running dogs", "the café", "a CAT"][i]  # noqa: E731
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 3, text=text)])
    assert "built full-text index" in capfd.readouterr().err
    assert [h.id for h in make_sink().search_text("run")] == ["a/d0#0"]  # stemmed
    assert [h.id for h in make_sink().search_text("cafe")] == ["a/d1#0"]  # ASCII-folded
    assert [[h.id for h in r] for r in make_sink().search_texts(["cat", "", "zebra"], k=3)] == [["a/d2#0"], [], []]

    with make_sink(fts_stem="false", fts_ascii_folding=False) as sink:  # other options: the index is rebuilt
        sink.open(MODEL, META)
    assert "built full-text index" in capfd.readouterr().err
    assert make_sink().search_text("run") == [] and make_sink().search_text("cafe") == []
    assert [h.id for h in make_sink().search_text("running")] == ["a/d0#0"]
    with make_sink(fts_stem="false", fts_ascii_folding=False) as sink:  # same options: left alone
        sink.open(MODEL, META)
    assert "built full-text index" not in capfd.readouterr().err

    with make_sink(fts="false") as sink:
        sink.open(MODEL, META)
    assert "dropped its full-text index" in capfd.readouterr().err
    with pytest.raises(ConfigError, match="no full-text index"):
        make_sink().search_text("cat")


def test_scalar_index_option(make_sink, capfd):
    with make_sink(scalar_index="topic:BITMAP,year,nope") as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [with_metadata("a", [{"topic": "Science", "year": 1}, {"topic": "Arts", "year": 2}])])
    err = capfd.readouterr().err
    assert "built BITMAP index on 'topic'" in err and "built BTREE index on 'year'" in err
    assert "no column 'nope' for scalar_index" in err
    kinds = {tuple(i.columns): i.index_type for i in make_sink()._table().list_indices()}
    assert kinds[("topic",)].upper() == "BITMAP" and kinds[("year",)].upper() == "BTREE"
    with pytest.raises(ConfigError, match="known: BTREE, BITMAP, LABEL_LIST"):
        make_sink(scalar_index="topic:HASH")


def test_scan_reads_the_table_back_in_batches_with_columns_and_a_filter(make_sink):
    with make_sink() as sink:
        sink.open(MODEL, META)
        sink.write_shard("a", [rows("a", 9, seed=1)])
        sink.write_shard("b", [rows("b", 4, seed=2)])
    reader = make_sink()  # a new sink on the same table: what publishing and fine-tuning do
    batches = list(reader.scan(batch_rows=5))
    assert all(isinstance(b, pa.RecordBatch) and b.num_rows <= 5 for b in batches)
    everything = pa.Table.from_batches(batches)
    assert set(embedded_schema(DIM).names) <= set(everything.column_names)
    assert sorted(everything.column("id").to_pylist()) == sorted(stored(reader))
    back = {r["id"]: r for r in everything.to_pylist()}
    for row in rows("a", 9, seed=1).to_pylist():
        np.testing.assert_array_equal(np.array(back[row["id"]]["vector"], np.float32),
                                      np.array(row["vector"], np.float32))
    picked = pa.Table.from_batches(list(reader.scan(["id", "doc_id"], filter="shard = 'b' AND chunk_index = 0")))
    assert picked.column_names == ["id", "doc_id"]
    assert sorted(picked.column("id").to_pylist()) == ["b/d0#0", "b/d3#0"]
    with pytest.raises(ConfigError, match="no table absent"):
        list(make_sink(table="absent").scan())


def test_a_sink_that_can_be_scanned_counts_its_rows_through_the_scan():
    from indexer.components import Sink

    class Written(Sink):
        def write_shard(self, shard, batches):
            return 0

    class Listed(Written):
        def scan(self, columns=None, *, filter=None, batch_rows=4096):
            yield rows("a", 3).select(columns or embedded_schema(DIM).names)
            yield rows("b", 2).select(columns or embedded_schema(DIM).names)

    assert Listed(db="x", table="t").count() == 5
    with pytest.raises(NotImplementedError, match="Written cannot be read back"):
        Written(db="x", table="t").count()
