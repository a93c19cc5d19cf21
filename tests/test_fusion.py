"""Hybrid search's fusion and the search settings, on hand-made rankings (no model, no database)."""

from __future__ import annotations

import pytest

from indexer import fusion
from indexer.components import Hit
from indexer.errors import ConfigError
from indexer.retrieval import Index, SearchSettings, rank


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    """Chunk hits from (chunk id, score); the document is the part before '#'."""
    return [Hit(id=i, doc_id=i.split("#")[0], score=s) for i, s in pairs]


def test_rrf_adds_weighted_reciprocal_ranks():
    dense = hits(("a#0", 0.9), ("b#0", 0.8), ("c#0", 0.1))
    text = hits(("c#0", 12.0), ("a#0", 3.0))
    fused = fusion.rrf(dense, text, text_weight=0.5, rrf_k=60, key=fusion.by_chunk)
    score = {h.id: h.score for h in fused}
    assert score["a#0"] == pytest.approx(1 / 61 + 0.5 / 62)
    assert score["b#0"] == pytest.approx(1 / 62)
    assert score["c#0"] == pytest.approx(1 / 63 + 0.5 / 61)
    assert [h.id for h in fused] == ["a#0", "c#0", "b#0"]


def test_text_weight_decides_between_the_lists():
    dense = hits(("a#0", 0.9), ("b#0", 0.8))
    text = hits(("b#0", 9.0), ("a#0", 1.0))
    for fuse in (fusion.rrf, fusion.convex):
        extra = {"rrf_k": 60} if fuse is fusion.rrf else {}
        assert fuse(dense, text, text_weight=0.5, key=fusion.by_chunk, **extra)[0].id == "a#0"
        assert fuse(dense, text, text_weight=2.0, key=fusion.by_chunk, **extra)[0].id == "b#0"


def test_convex_normalises_each_list_to_its_own_range():
    dense = hits(("a#0", 0.50), ("b#0", 0.45), ("c#0", 0.40))
    text = hits(("c#0", 30.0), ("b#0", 20.0))
    fused = {h.id: h.score for h in fusion.convex(dense, text, text_weight=1.0, key=fusion.by_chunk)}
    assert fused["a#0"] == pytest.approx(1.0 / 2)  # top of dense, absent from text
    assert fused["b#0"] == pytest.approx((0.5 + 0.0) / 2)
    assert fused["c#0"] == pytest.approx((0.0 + 1.0) / 2)


def test_fusing_documents_before_or_after_aggregation():
    # Document x has the best dense chunk and the best text chunk in different chunks; y is second in both.
    dense = hits(("x#0", 0.9), ("y#0", 0.8), ("w#0", 0.3), ("x#1", 0.1))
    text = hits(("x#1", 10.0), ("y#0", 9.0), ("z#0", 8.0))
    by_doc = SearchSettings("hybrid", fusion="rrf", text_weight=1.0, fuse="doc")
    by_chunk = by_doc.with_(fuse="chunk")
    # per document: x is first in both document rankings
    assert [h.doc_id for h in rank(dense, text, 2, True, by_doc)] == ["x", "y"]
    # per chunk: y#0, second in both lists, beats x#0 (first in dense only) and x#1 (first in text, fourth in dense)
    assert [h.doc_id for h in rank(dense, text, 2, True, by_chunk)] == ["y", "x"]
    # a fused document is represented by its best dense chunk, with the fused score
    top = rank(dense, text, 1, True, by_doc)[0]
    assert top.id == "x#0" and top.score == pytest.approx(2 / 61)


def test_single_modes_rank_their_own_list():
    dense = hits(("a#0", 0.9), ("a#1", 0.8), ("b#0", 0.7))
    text = hits(("b#0", 5.0))
    assert [h.id for h in rank(dense, text, 2, False, SearchSettings("dense"))] == ["a#0", "a#1"]
    assert [h.id for h in rank(dense, text, 2, True, SearchSettings("dense"))] == ["a#0", "b#0"]
    assert [h.id for h in rank(dense, text, 2, False, SearchSettings("text"))] == ["b#0"]


@pytest.mark.parametrize("bad", [{"mode": "semantic"}, {"fusion": "max"}, {"rrf_k": 0}, {"text_weight": -1},
                                 {"fuse": "shard"}])
def test_settings_refuse_bad_values(bad):
    with pytest.raises(ConfigError):
        SearchSettings(**bad)


def test_settings_round_trip_and_override():
    s = SearchSettings("hybrid", fusion="convex", text_weight=0.5)
    assert SearchSettings.from_dict({**s.to_dict(), "unknown": 1}) == s
    assert s.with_(mode=None, text_weight=2.0) == SearchSettings("hybrid", fusion="convex", text_weight=2.0)
    assert s.describe() == "hybrid (convex, text weight 0.5, fused per doc)"


class DenseOnlySink:
    search_modes = ("dense",)


def test_a_sink_that_cannot_serve_a_mode_says_so():
    index = Index("t", DenseOnlySink(), embedder=None, meta={"sink": "colbert"})
    with pytest.raises(ConfigError, match="sink 'colbert' cannot search in text mode; it serves dense"):
        index.resolve(mode="text")
    assert index.resolve(mode="dense") == (SearchSettings("dense"), "given")
    assert index.resolve() == (SearchSettings("dense"), "default")


def test_the_default_is_hybrid_with_convex_fusion():
    from indexer.retrieval import DEFAULT_SETTINGS

    assert DEFAULT_SETTINGS == SearchSettings("hybrid", fusion="convex", text_weight=0.5, fuse="doc")
