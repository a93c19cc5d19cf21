"""Quality end to end on the DBpedia-entity subset: indexer's nDCG@10 equals an independent brute force."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO, SHARED

DBPEDIA = SHARED / "data" / "dbpedia-entity-subset"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DBPEDIA.is_dir(), reason="needs ../shared/data/dbpedia-entity-subset")]


def _script():
    spec = importlib.util.spec_from_file_location("check_quality", REPO / "scripts" / "check_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_whole_document_ndcg_matches_brute_force(tmp_path, model_path):
    script = _script()
    ours = script.indexer_metrics(DBPEDIA, model_path, tmp_path, chunker="document")
    brute = script.brute_force_ndcg10(DBPEDIA, model_path)
    assert ours["queries"] == 40 and ours["chunks"] == 5000
    assert abs(ours["ndcg@10"] - brute) <= 0.005, (ours, brute)
    assert 0.3 < brute < 0.95  # a sane range for MiniLM on this easy subset
