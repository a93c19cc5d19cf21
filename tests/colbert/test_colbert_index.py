"""``indexer build SOURCE --late-interaction colbert`` then ``indexer search``, end to end on a slice of the demo
corpus: a PLAID index and a LanceDB multivector table built from one embedding pass, both checked against a
brute-force MaxSim over the same token vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ragatouille")
pytest.importorskip("indexer_colbert")

from colbert_helpers import colbert_model, demo_docs, open_index, write_corpus  # noqa: E402, F401  (a fixture)

from indexer.cli import main

DOCS = demo_docs(0, 120)


def _chunk_text(doc: dict) -> str:
    return f"{doc['title']}\n\n{doc['text']}"


@pytest.fixture(scope="module")
def built(colbert_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colbert-index")
    source = write_corpus(tmp / "corpus.jsonl", DOCS)
    db = str(tmp / "db.lancedb")
    args = ["build", source, "--title-field", "title", "--metadata-field", "topic", "--late-interaction", "colbert",
            "--model", colbert_model, "--sink", "colbert", "--sink", "lancedb-multivector", "--db", db,
            "--no-progress", "--summary-json", str(tmp / "summary.json")]
    main(args)
    return {"db": db, "args": args, "summary": json.loads((tmp / "summary.json").read_text()), "tmp": tmp}


def _search_json(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    main(["search", *args, "--json"])
    return json.loads(capsys.readouterr().out)["hits"]


def test_build_then_search_round_trips_chunk_ids_and_metadata(built, capsys):
    summary = built["summary"]
    assert summary["documents"] == len(DOCS) and summary["chunks"] > len(DOCS)  # long summaries were split
    by_id = {d["id"]: d for d in DOCS}
    target = DOCS[7]
    query = f"{target['title']}: {target['description']}"
    for sink in ("colbert", "lancedb-multivector"):
        hits = _search_json(capsys, query, "--db", built["db"], "--sink", sink, "-k", "5")
        assert len(hits) == 5
        assert target["id"] in [h["doc_id"] for h in hits[:3]], (sink, hits)
        for h in hits:
            doc = by_id[h["doc_id"]]
            assert h["id"] == f"{h['doc_id']}#{h['chunk_index']}"
            assert h["metadata"] == {"topic": doc["topic"]}
            assert h["text"] and h["text"] in _chunk_text(doc)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    docs = _search_json(capsys, query, "--db", built["db"], "--sink", "colbert", "-k", "10", "--by-doc")
    assert len({h["doc_id"] for h in docs}) == len(docs) == 10
    assert docs[0]["doc_id"] == target["id"] or target["id"] in [h["doc_id"] for h in docs[:3]]


def test_a_mode_the_plaid_index_cannot_serve_fails_with_a_clear_message(built):
    import indexer
    from indexer.errors import ConfigError

    for mode in ("text", "hybrid"):
        with pytest.raises(ConfigError, match=f"sink 'colbert' cannot search in {mode} mode; it serves dense"):
            indexer.search("sprint race", db=built["db"], sink="colbert", mode=mode)
    assert indexer.search("sprint race", db=built["db"], sink="colbert", k=2).settings.mode == "dense"


def test_plain_search_finds_the_multivector_table_by_its_recorded_sink(built, capsys):
    hits = _search_json(capsys, "sprint race", "--db", built["db"], "-k", "3")
    assert len(hits) == 3 and hits[0]["score"] > 1.0  # a MaxSim (sum over query tokens), not a cosine


def test_plaid_and_lancedb_agree_with_brute_force_maxsim_over_the_same_vectors(built):
    from indexer_colbert.multivector import exact_ranking, stored_vectors, top_k

    ids, vectors = stored_vectors(built["db"])
    plaid = open_index(built["db"], sink_name="colbert")
    lance = open_index(built["db"], sink_name="lancedb-multivector")
    queries = [f"{d['title']} {d['description']}" for d in DOCS[::6]][:20]
    assert len(queries) == 20
    query_vectors = plaid.embedder.embed_queries(queries)
    overlaps, ratios = [], []
    for query, q in zip(queries, query_vectors):
        ranking = exact_ranking(q, ids, vectors)
        exact = top_k(ranking, 10)
        tenth = ranking[9][1]
        score_of = dict(ranking)

        lance_hits = lance.search([query], 10)[0]
        for h in lance_hits:  # exact: the same chunks (up to ties at the 10th place) with the same scores
            assert h.score == pytest.approx(float(score_of[h.id]), abs=1e-3)
            assert score_of[h.id] >= tenth - 1e-4
        assert len(lance_hits) == 10

        plaid_hits = plaid.search([query], 10)[0]
        overlaps.append(len({h.id for h in plaid_hits} & set(exact)))
        # PLAID scores decompressed residuals (8-bit here); the max over noisy similarities runs a little high.
        ratios += [h.score / score_of[h.id] for h in plaid_hits]
    print(f"PLAID top-10 overlap with brute force: {overlaps}; score ratio {min(ratios):.3f}..{max(ratios):.3f}")
    assert sum(overlaps) / len(overlaps) >= 9, overlaps
    assert 0.95 < min(ratios) and max(ratios) < 1.05  # (with 4-bit residuals they were -5 % / +6 %)


def test_residual_bits_and_search_depth_are_the_sink_settings(built):
    from indexer_colbert.plaid import SEARCH_NDOCS

    plaid = open_index(built["db"], sink_name="colbert")
    index_config = json.loads((plaid.sink.index_path / "metadata.json").read_text())["config"]
    assert index_config["nbits"] == 8  # auto, below 10,000 chunks
    plaid.search(["sprint race"], 10)
    searcher = plaid.sink._open_rag().model.model_index.searcher
    assert searcher.config.ndocs == SEARCH_NDOCS  # RAGatouille's own setting would be 1024


def test_rerunning_the_build_changes_nothing(built, capsys):
    index = Path(built["db"], "_plaid")
    before = {p: p.stat().st_mtime_ns for p in index.rglob("*") if p.is_file()}
    hits_before = open_index(built["db"], sink_name="colbert").search(["history of music"], 10)[0]
    capsys.readouterr()
    main(built["args"])
    err = capsys.readouterr().err
    assert "1 already done, skipped" in err and "PLAID index" not in err
    assert {p: p.stat().st_mtime_ns for p in index.rglob("*") if p.is_file()} == before
    hits_after = open_index(built["db"], sink_name="colbert").search(["history of music"], 10)[0]
    assert [(h.id, h.score) for h in hits_after] == [(h.id, h.score) for h in hits_before]
