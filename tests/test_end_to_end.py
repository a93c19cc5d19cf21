"""The local path end to end with the real components: real files, the real MiniLM model, real LanceDB."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import indexer
from conftest import DEMO_CORPUS
from indexer.cli import cli, main
from indexer.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(DEMO_CORPUS.read_text().splitlines()[:60]) + "\n")
    return path


def _build(source, tmp_path, model_path, **kw):
    settings = dict(db=str(tmp_path / "db"), model=model_path, title_field="title", progress=False)
    settings.update(kw)
    return indexer.build(str(source), **settings)


def _table(tmp_path, name):
    import lancedb

    return lancedb.connect(str(tmp_path / "db")).open_table(name).to_arrow()


def test_build_search_and_info(tmp_path, model_path, small_corpus):
    s = _build(small_corpus, tmp_path, model_path, metadata_fields=["topic"])
    assert s.documents == 60 and s.chunks >= 60 and not s.bad
    rows = _table(tmp_path, s.table)
    assert rows.num_rows == s.chunks == len(set(rows.column("id").to_pylist()))
    first = json.loads(DEMO_CORPUS.read_text().splitlines()[0])
    hits = indexer.search(first["text"][:200], db=str(tmp_path / "db"), k=3)
    assert hits[0].doc_id == first["id"] and hits[0].metadata == {"topic": first["topic"]}
    info = indexer.info(str(tmp_path / "db"))
    assert info[0]["rows"] == s.chunks and info[0]["meta"]["model"]["dimension"] == 384

    runner = CliRunner()
    out = runner.invoke(cli, ["search", "a famous painter", "--db", str(tmp_path / "db"), "--k", "3", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)["hits"]) == 3
    out = runner.invoke(cli, ["info", "--db", str(tmp_path / "db")])
    assert "384" in out.output and "rows      " in out.output


def test_unchanged_rerun_embeds_nothing_and_an_edit_reembeds_one_document(tmp_path, model_path, small_corpus):
    first = _build(small_corpus, tmp_path, model_path)
    again = _build(small_corpus, tmp_path, model_path)
    assert again.embedded_chunks == 0 and again.shards_skipped == again.shards == 1

    lines = small_corpus.read_text().splitlines()
    doc = json.loads(lines[7])
    doc["text"] = "A completely rewritten article about lighthouses and the sea."
    lines[7] = json.dumps(doc)
    small_corpus.write_text("\n".join(lines) + "\n")
    edited = _build(small_corpus, tmp_path, model_path)
    rows = _table(tmp_path, first.table)
    mine = [r for r in rows.to_pylist() if r["doc_id"] == doc["id"]]
    assert edited.embedded_chunks == 1 and edited.reused_chunks == edited.chunks - 1
    assert len(mine) == 1 and "lighthouses" in mine[0]["text"]
    assert rows.num_rows == edited.chunks == len(set(rows.column("id").to_pylist()))


def test_bad_records_are_named_and_good_ones_indexed(tmp_path, model_path):
    good = [{"id": f"g{i}", "text": f"Good document number {i} about rivers and mountains."} for i in range(5)]
    lines = [json.dumps(g) for g in good[:3]]
    lines += [
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "empty", "text": ""}),
        json.dumps({"id": "blank", "text": "   \n\t"}),
        json.dumps({"id": "number", "text": 42}),
        "{not json at all",
        json.dumps({"id": "huge", "text": "word " * 30_000}),
        json.dumps({"id": "g0", "text": "a duplicate id"}),
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"id": "latin1", "text": "caf\xe9"}\n'
    data += ("\n".join(json.dumps(g) for g in good[3:]) + "\n").encode()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    s = _build(path, tmp_path, model_path, max_doc_chars=100_000)
    reasons = " | ".join(str(b) for b in s.bad)
    assert s.documents == 5
    for name in ("no-text", "empty", "blank", "number", "line 7", "huge", "g0", "line 10"):
        assert name in reasons, f"{name} not reported: {reasons}"
    assert "UTF-8" in reasons and "duplicate" in reasons and "JSON" in reasons
    assert {r["doc_id"] for r in _table(tmp_path, s.table).to_pylist()} == {g["id"] for g in good}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--embedder", "nope"], "unknown embedder 'nope'; known embedders:"),
        (["--sink", "nope"], "unknown sink 'nope'; known sinks:"),
        (["--model", "/no/such/model"], "/no/such/model"),
        (["--max-tokens", "100000"], "--max-tokens"),
        (["--source-type", "nope"], "unknown source 'nope'; known sources:"),
    ],
)
def test_bad_config_fails_before_work_with_a_fix(tmp_path, model_path, small_corpus, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["build", str(small_corpus), "--db", str(tmp_path / "db"), "--model", model_path, *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "db" / "_indexer").exists()


def test_unreadable_source_path(tmp_path, model_path):
    with pytest.raises(ConfigError, match="no_such"):
        _build(tmp_path / "no_such.jsonl", tmp_path, model_path)


def test_api_functions_survive_importing_the_modules_behind_them():
    import importlib
    import pkgutil
    import types

    import indexer.metrics  # noqa: F401
    import indexer.retrieval  # noqa: F401

    for module in pkgutil.iter_modules(indexer.__path__):  # a submodule named like an API name would shadow it
        importlib.import_module(f"indexer.{module.name}")
    assert callable(indexer.search) and callable(indexer.evaluate) and callable(indexer.build)
    assert not [name for name in indexer._API if isinstance(getattr(indexer, name), types.ModuleType)]
