"""Search modes and filters end to end: the real MiniLM model, real LanceDB (its full-text index), the CLI and the
API, on part of the demo corpus built with its topics as metadata."""

from __future__ import annotations

import json
import shutil

import pytest

import indexer
from conftest import build_demo_topics, split_demo
from indexer.cli import main
from indexer.errors import ConfigError

pytestmark = pytest.mark.slow

MODES = ("dense", "text", "hybrid")
TOPIC = "Physical sciences"
QUERIES = {"q1": "the speed of light and the theory of relativity", "q2": "chemical elements and acids",
           "q3": "planets of the solar system"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_path):
    built = build_demo_topics(tmp_path_factory.mktemp("search"), model_path, per_shard=150)
    corpus = built["corpus"]
    topics = {}
    for line in (corpus / "part-00.jsonl").read_text().splitlines() + (corpus / "part-01.jsonl").read_text().splitlines():
        doc = json.loads(line)
        topics[doc["id"]] = doc["topic"]
    return {**built, "topics": topics}


def _copy(built, name):
    dst = built["root"] / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(built["db"], dst)
    return str(dst)


def _cli(capsys, *args) -> str:
    capsys.readouterr()
    main([str(a) for a in args])
    return capsys.readouterr().out


@pytest.mark.parametrize("mode", MODES)
def test_where_filters_every_mode_single_batch_api_and_cli(built, mode, capsys, tmp_path):
    db, topics = built["db"], built["topics"]
    where = f"topic = '{TOPIC}'"
    for by_doc in (False, True):
        hits = indexer.search(QUERIES["q1"], db=db, k=8, by_doc=by_doc, mode=mode, filter=where)
        assert hits and {topics[h.doc_id] for h in hits} == {TOPIC}
        assert hits.settings.mode == mode and hits.origin == "given"
        unfiltered = indexer.search(QUERIES["q1"], db=db, k=30, by_doc=by_doc, mode=mode)
        assert {topics[h.doc_id] for h in unfiltered} != {TOPIC}  # the filter did the work
    batch = indexer.search_batch(QUERIES, db=db, k=5, mode=mode, filter=where)
    assert all(hits and {topics[h.doc_id] for h in hits} == {TOPIC} for hits in batch.values())

    out = json.loads(_cli(capsys, "search", QUERIES["q3"], "--db", db, "--mode", mode, "--where", where, "--json"))
    assert out["mode"] == mode and out["settings_from"] == "given"
    assert out["hits"] and {topics[h["doc_id"]] for h in out["hits"]} == {TOPIC}
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    run = tmp_path / "run.trec"
    main(["search", "--queries", str(queries), "--run-file", str(run), "--db", db, "--mode", mode, "--where", where,
          "--by-doc", "-k", "5"])
    assert f"3 queries to {run} (mode {mode}" in capsys.readouterr().err
    docs = [line.split("\t" if "\t" in line else " ")[2] for line in run.read_text().splitlines()]
    assert docs and {topics[d] for d in docs} == {TOPIC}

    # doc_id is a column too
    first = next(iter(topics))
    assert {h.doc_id for h in indexer.search(first, db=db, mode=mode, filter=f"doc_id = '{first}'")} <= {first}


def test_a_filter_on_an_unknown_column_fails_before_searching(built, monkeypatch):
    import indexer_lancedb

    def no_search(*args, **kwargs):
        raise AssertionError("searched despite a bad filter")

    monkeypatch.setattr(indexer_lancedb.LanceDBSink, "search", no_search)
    monkeypatch.setattr(indexer_lancedb.LanceDBSink, "search_texts", no_search)
    for mode in MODES:
        with pytest.raises(ConfigError, match=r"No field named subject.*filterable columns of table .*: topic, id, "
                                              r"doc_id"):
            indexer.search("stars", db=built["db"], mode=mode, filter="subject = 'Science'")


def test_the_cli_says_which_mode_ran(built, capsys):
    out = _cli(capsys, "search", "stars", "--db", built["db"], "-k", "2")
    assert out.count("\n") == 4
    main(["search", "stars", "--db", built["db"], "-k", "2", "--mode", "hybrid", "--text-weight", "0.5"])
    assert "mode hybrid (convex, text weight 0.5, fused per doc), as given" in capsys.readouterr().err
    main(["search", "stars", "--db", built["db"], "-k", "2"])
    assert "mode hybrid (convex, text weight 0.5, fused per doc), default" in capsys.readouterr().err
    main(["search", "stars", "--db", built["db"], "-k", "2", "--mode", "hybrid", "--fusion", "rrf", "--rrf-k", "20"])
    assert "mode hybrid (rrf, k=20, text weight 0.5, fused per doc), as given" in capsys.readouterr().err


def test_text_search_follows_an_edit(model_path, tmp_path):
    corpus = split_demo(tmp_path / "corpus", shards=1, per_shard=30)
    db = str(tmp_path / "db")
    indexer.build(str(corpus), db=db, model=model_path, title_field="title", progress=False)
    lines = (corpus / "part-00.jsonl").read_text().splitlines()
    doc = json.loads(lines[0])
    old_word = "prestigious"
    assert old_word in doc["text"]
    hits = indexer.search(old_word, db=db, mode="text", k=20)
    assert doc["id"] in {h.doc_id for h in hits}
    doc["text"] = "The zorblatt dash is a sprint race run on a track."
    lines[0] = json.dumps(doc)
    (corpus / "part-00.jsonl").write_text("\n".join(lines) + "\n")
    summary = indexer.build(str(corpus), db=db, model=model_path, title_field="title", progress=False)
    assert summary.embedded_chunks == 1
    for mode in ("text", "hybrid"):
        assert indexer.search("zorblatt", db=db, mode=mode, k=3)[0].doc_id == doc["id"]
    assert doc["id"] not in {h.doc_id for h in indexer.search(old_word, db=db, mode="text", k=20)}


def test_a_table_built_before_search_modes_still_searches_and_a_rebuild_upgrades_it(built, model_path):
    import lancedb

    db = _copy(built, "old")
    table = lancedb.connect(db).open_table(built["table"])
    table.drop_index(next(i.name for i in table.list_indices() if i.index_type == "FTS"))
    table.drop_columns(["topic"])  # the layout of a table written before metadata had columns
    assert indexer.search("stars", db=db, k=3, filter="doc_id != ''")
    with pytest.raises(ConfigError, match="has no full-text index"):
        indexer.search("stars", db=db, mode="text")
    with pytest.raises(ConfigError, match="filterable columns"):
        indexer.search("stars", db=db, filter=f"topic = '{TOPIC}'")

    again = indexer.build(str(built["corpus"]), db=db, model=model_path, title_field="title",
                          metadata_fields=["topic"], progress=False)
    assert again.embedded_chunks == 0 and again.shards_skipped == again.shards
    hits = indexer.search("stars", db=db, mode="hybrid", k=5, filter=f"topic = '{TOPIC}'")
    assert hits and {built["topics"][h.doc_id] for h in hits} == {TOPIC}


def test_recorded_settings_are_the_default_and_a_caller_overrides_them(built, capsys):
    from indexer.retrieval import SearchSettings, record_settings
    from indexer.state import WorkDir

    db = _copy(built, "recorded")
    record_settings(WorkDir(f"{db}/_indexer"), built["table"], SearchSettings("text"), metric="ndcg@10")
    hits = indexer.search("stars and planets", db=db, k=5)
    assert hits.settings == SearchSettings("text") and hits.origin == "recorded"
    assert [h.id for h in hits] == [h.id for h in indexer.search("stars and planets", db=db, k=5, mode="text")]
    out = json.loads(_cli(capsys, "search", "stars and planets", "--db", db, "--json"))
    assert out["mode"] == "text" and out["settings_from"] == "recorded"
    assert indexer.search("stars", db=db, mode="dense").settings.mode == "dense"
    assert indexer.info(db)[0]["search"] == {"settings": SearchSettings("text").to_dict(), "from": "recorded"}
    assert "search    text (recorded by tune-search)" in _cli(capsys, "info", "--db", db)
