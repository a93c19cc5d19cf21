"""Adding, deleting and editing documents: each rebuild brings the PLAID index (through RAGatouille's
``add_to_index`` / ``delete_from_index``, or a rebuild for a mix) and the LanceDB multivector table up to date, and
search results follow."""

from __future__ import annotations

import pytest

pytest.importorskip("ragatouille")
pytest.importorskip("indexer_colbert")

from colbert_helpers import colbert_model, demo_docs, open_index, write_corpus  # noqa: E402, F401  (a fixture)

from indexer import api

DOCS = demo_docs(200, 245)


def _title_query(doc: dict) -> str:
    return f"{doc['title']} {doc['description']}"


def _state(db: str) -> tuple:
    plaid = open_index(db, sink_name="colbert")
    lance = open_index(db, sink_name="lancedb-multivector")
    return plaid, lance


def _found(index, doc: dict, k: int = 5) -> list[str]:
    return [h.doc_id for h in index.search([_title_query(doc)], k)[0]]


def _check_consistent(plaid, docs: list[dict]) -> None:
    """The index holds exactly the corpus's chunks, and every hit's text is its own chunk's (ids stay aligned)."""
    indexed = plaid.sink._indexed()
    assert {c.split("#")[0] for c in indexed} == {d["id"] for d in docs}
    by_id = {d["id"]: f"{d['title']}\n\n{d['text']}" for d in docs}
    for d in docs[::7]:
        for h in plaid.search([_title_query(d)], 5)[0]:
            assert h.text in by_id[h.doc_id]


def test_adding_deleting_and_editing_documents(colbert_model, tmp_path, capsys):
    db = str(tmp_path / "db.lancedb")
    source = tmp_path / "corpus.jsonl"
    settings = dict(db=db, title_field="title", late_interaction="colbert", model=colbert_model,
                    sinks=["colbert", "lancedb-multivector"], progress=False)

    first, added = DOCS[:30], DOCS[30:40]
    write_corpus(source, first)
    api.build(str(source), **settings)
    plaid, lance = _state(db)
    assert added[0]["id"] not in _found(plaid, added[0]) + _found(lance, added[0])

    # Additions: RAGatouille's add_to_index (which re-clusters a collection this small).
    write_corpus(source, first + added)
    capsys.readouterr()
    summary = api.build(str(source), **settings)
    err = capsys.readouterr().err
    assert "updated with" in err and " 0 deleted" in err
    assert summary.embedded_chunks < summary.chunks  # unchanged chunks were not embedded again
    plaid, lance = _state(db)
    for doc in added[:4]:
        assert doc["id"] in _found(plaid, doc), doc["id"]
        assert doc["id"] in _found(lance, doc), doc["id"]
    _check_consistent(plaid, first + added)

    # Deletions: delete_from_index, including passage 0 (ColBERT issue 407) and the last passage.
    deleted = [first[0], first[1], added[-1]]
    kept = [d for d in first + added if d not in deleted]
    write_corpus(source, kept)
    capsys.readouterr()
    api.build(str(source), **settings)
    assert "updated with 0 added and" in capsys.readouterr().err
    plaid, lance = _state(db)
    for doc in deleted:
        assert doc["id"] not in _found(plaid, doc, 10) + _found(lance, doc, 10)
    for doc in kept[:3]:
        assert doc["id"] in _found(plaid, doc)
    _check_consistent(plaid, kept)

    # A mix (new documents and an edited one, after deletions): a rebuild.
    edited = dict(kept[5], text="Zanzibar quokkas juggle saxophones under the aurora borealis every winter.")
    new = DOCS[40:45]
    final = [edited if d is kept[5] else d for d in kept] + new
    write_corpus(source, final)
    capsys.readouterr()
    api.build(str(source), **settings)
    assert "rebuilt with" in capsys.readouterr().err
    plaid, lance = _state(db)
    for index in (plaid, lance):
        top = index.search(["quokkas juggle saxophones aurora"], 3)[0]
        assert top[0].doc_id == edited["id"] and "quokkas" in top[0].text
        for doc in new[:3]:
            assert doc["id"] in _found(index, doc)
    _check_consistent(plaid, final)


def test_a_corpus_that_will_not_fit_is_refused_before_indexing(colbert_model, tmp_path, monkeypatch):
    from indexer.errors import ConfigError

    import indexer_colbert.estimate as estimate

    monkeypatch.setattr(estimate, "available_memory", lambda: (64 * 1024**2, None))
    source = write_corpus(tmp_path / "corpus.jsonl", DOCS[:8])
    db = tmp_path / "db.lancedb"
    with pytest.raises(ConfigError, match="will not fit: building needs about .* of memory; this machine has 64.0 MiB"):
        api.build(source, db=str(db), late_interaction="colbert", model=colbert_model, progress=False)
    assert not list(db.glob("_plaid/*/colbert"))  # nothing was indexed


@pytest.mark.parametrize("option, value, message", [
    ("nbits", "3", "colbert option nbits must be auto or one of 1, 2, 4, 8"),
    ("ndocs", "0", "colbert option ndocs must be at least 1"),
])
def test_bad_plaid_options_are_refused_before_any_work(colbert_model, tmp_path, option, value, message):
    from indexer.errors import ConfigError

    source = write_corpus(tmp_path / "corpus.jsonl", DOCS[:4])
    db = tmp_path / "db.lancedb"
    with pytest.raises(ConfigError, match=message):
        api.build(source, db=str(db), late_interaction="colbert", model=colbert_model, progress=False,
                  options={"colbert": {option: value}})
    assert not (db / "_indexer" / "vectors").exists()  # nothing was embedded
