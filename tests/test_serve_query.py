"""The filters `indexer serve` builds from request values, evaluated by real LanceDB; and its highlighting."""

from __future__ import annotations

import pytest

from indexer_serve.query import BadFilter, highlights, parse_pairs, query_stems, sql_predicate

KINDS = {"my topic": "string", "tags": "strings", "year": "int", "ok": "bool", "w": "float"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    lancedb = pytest.importorskip("lancedb")
    import pyarrow as pa

    db = lancedb.connect(str(tmp_path_factory.mktemp("filters")))
    return db.create_table("t", pa.table({
        "id": ["a", "b", "c"], "my topic": ["x", "Children's books", "y"], "tags": [["p", "q"], ["r"], []],
        "year": [2001, 2002, 2003], "ok": [True, False, True], "w": [0.5, 1.5, 2.5]}))


@pytest.mark.parametrize("conditions, ids", [
    ({"my topic": "Children's books"}, ["b"]),  # an apostrophe inside a word is data, quoted by doubling
    ({"tags": ["q", "r"]}, ["a", "b"]),  # a list column: any item equals any value
    ({"year": "2002"}, ["b"]),  # GET values arrive as text and take the column's type
    ({"year": [2001, 2003]}, ["a", "c"]),
    ({"ok": "true"}, ["a", "c"]),
    ({"w": 1.5}, ["b"]),
    ({"my topic": ["x", "y"], "year": 2003}, ["c"]),  # fields ANDed, values of one field ORed
])
def test_predicates_select_what_the_values_say(table, conditions, ids):
    predicate = sql_predicate(conditions, KINDS)
    assert sorted(table.search().where(predicate).to_arrow().column("id").to_pylist()) == ids


@pytest.mark.parametrize("conditions, words", [
    ({"colour": "red"}, "unknown filter field 'colour'"),
    ({"my topic": "x' OR '1'='1"}, "not SQL"),
    ({"my topic": "x'; DROP TABLE t; --"}, "not SQL"),
    ({"my topic": "x\\' OR 1=1"}, "not SQL"),
    ({"my topic": 'say "hi"'}, "not SQL"),
    ({"my topic": "a\x00b"}, "not SQL"),
    ({"my topic": "x" * 201}, "longer than"),
    ({"year": "2001 OR 1=1"}, "whole numbers"),
    ({"year": 1.5}, "whole numbers"),
    ({"w": float("nan")}, "numbers"),
    ({"ok": "yes"}, "true or false"),
    ({"my topic": []}, "1 to 50 values"),
    ({"my topic": True}, "holds text"),
])
def test_values_that_are_not_plain_data_are_refused(conditions, words):
    with pytest.raises(BadFilter, match=words):
        sql_predicate(conditions, KINDS)


def test_get_filters_parse_and_no_filter_is_no_predicate():
    assert parse_pairs(["topic:People", "topic:History", "year:2001"]) == {"topic": ["People", "History"],
                                                                         "year": ["2001"]}
    assert parse_pairs(["title:A: a subtitle"]) == {"title": ["A: a subtitle"]}  # the first colon splits
    with pytest.raises(BadFilter, match="FIELD:VALUE"):
        parse_pairs(["topic"])
    assert sql_predicate({}, KINDS) is None


def test_highlights_mark_query_words_in_any_form_but_not_stop_words():
    text = "The Vaccines worked: a vaccine is vaccinated into the arm. Café society."
    spans = highlights(text, query_stems("how do the vaccines work at the cafe"))
    assert [text[a:b] for a, b in spans] == ["Vaccines", "worked", "vaccine", "vaccinated", "Café"]
    assert highlights(text, query_stems("the of and")) == []
