"""Index size and memory estimates, and the CLI that prints them before a build."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ragatouille")
pytest.importorskip("indexer_colbert")

from colbert_helpers import colbert_model, demo_docs, write_corpus  # noqa: E402, F401  (a fixture)

from indexer.cli import main
from indexer.errors import ConfigError
from indexer_colbert.estimate import GiB, estimate


def test_estimate_follows_plaid_compression():
    small = estimate(1_000, 100_000, 128)
    assert small.tokens == 103_000 and small.nbits == 8  # below 10,000 passages (RAGatouille: 4)
    assert small.multivector_bytes == 103_000 * 128 * 4
    assert small.plaid_bytes < small.multivector_bytes / 3
    assert estimate(1_000, 100_000, 128, nbits=4).plaid_bytes < small.plaid_bytes * 0.6
    big = estimate(10_000_000, 1_500_000_000, 128)
    assert big.nbits == 2 and big.plaid_bytes < big.multivector_bytes / 6
    assert big.partitions == 2 ** 19
    assert big.build_ram_bytes > big.plaid_bytes and big.search_ram_bytes > big.plaid_bytes
    assert small.problems(64 * GiB) == []
    assert big.problems(64 * GiB, 40 * GiB, where="an A100 container")[0].startswith("building needs about")
    with pytest.raises(ConfigError, match="(?s)will not fit.*an A100 container.*Index fewer documents"):
        big.check_fits(64 * GiB, 40 * GiB, where="an A100 container")


def test_estimate_command_counts_the_chunks_a_build_would_make(colbert_model, tmp_path, capsys):
    source = write_corpus(tmp_path / "corpus.jsonl", demo_docs(0, 30))
    capsys.readouterr()
    main(["colbert", "estimate", source, "--model", colbert_model, "--title-field", "title", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["passages"] >= 30 and out["tokens"] > 30 * 20 and out["dim"] == 128 and out["problems"] == []
    with pytest.raises(SystemExit):
        main(["colbert", "estimate", source, "--model", colbert_model, "--gpu-memory", "0.0001"])
    assert "does NOT fit" in capsys.readouterr().out
