"""One logging tree: ``indexer -q`` hides the INFO messages of a build, ``-v`` shows DEBUG ones; the run summary,
a command's results and the default messages look as they did (real MiniLM, real LanceDB)."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from conftest import DEMO_CORPUS
from indexer.cli import cli
from indexer.log import configure, get_logger

INFO = "built full-text index on 'text'"  # the LanceDB sink, once a build has written its rows
DEBUG = "local embedder: "  # the local embedder, once it has loaded its model


@pytest.fixture(autouse=True)
def normal_level():
    yield
    configure("normal")  # the tree's level is the process's: leave the next test the default


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("log")
    lines = DEMO_CORPUS.read_text(encoding="utf-8").splitlines()[:20]
    path = folder / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _indexer(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


def test_quiet_hides_info_and_verbose_shows_debug(corpus, model_path, tmp_path):
    db = str(tmp_path / "db")
    quiet = _indexer("-q", "build", str(corpus), "--db", db, "--model", model_path)
    assert INFO not in quiet.stderr
    assert "rows written" in quiet.stderr  # the run summary is output, not logging

    default = _indexer("build", str(corpus), "--db", str(tmp_path / "db2"), "--model", model_path)
    assert INFO in default.stderr  # the same build shows it at the default level, as its own line
    assert any(line.startswith("table ") and INFO in line for line in default.stderr.splitlines())
    assert DEBUG not in default.stderr

    verbose = _indexer("-v", "search", "painter", "--db", db, "--json", "--k", "2")
    assert any(line.startswith(DEBUG) and "loaded on cpu" in line for line in verbose.stderr.splitlines())
    assert len(json.loads(verbose.stdout)["hits"]) == 2  # the command's result is untouched


def test_verbose_and_quiet_together_is_a_usage_error():
    result = CliRunner().invoke(cli, ["-v", "-q", "info"])
    assert result.exit_code == 2 and "not both" in result.stderr


def test_the_tree_writes_to_the_stderr_of_the_moment_in_the_plain_form(capsys, caplog):
    log = get_logger("test")
    log.info("plain %s", "message")
    log.debug("not at the default level")
    assert capsys.readouterr().err == "plain message\n"
    configure("quiet")
    log.info("hidden")
    log.warning("still shown")
    assert capsys.readouterr().err == "still shown\n"
    assert [r.getMessage() for r in caplog.records if r.name == "indexer.test"] == ["plain message", "still shown"]
    with pytest.raises(ValueError, match="quiet, normal, verbose"):
        configure("loud")
    configure("normal", handler=False)  # an application that prints the records itself
    log.info("to the application's handlers only")
    assert capsys.readouterr().err == "" and logging.getLogger("indexer").handlers == []
    configure("normal")
    assert len(logging.getLogger("indexer").handlers) == 1
