"""Model versions in the core (:mod:`indexer.versions`): where held-out judgements come from.

The re-embed / promote / prune round trip on a real index is in ``tests/test_feedback.py``; this checks the seam
between the core and the plugin that keeps judgements (the ``heldout_judgements`` hook), with no model loaded.
"""

from __future__ import annotations

import json

from indexer.hookspecs import hookimpl
from indexer.plugins import Host, make_plugin_manager
from indexer.versions import Heldout, heldout_from_model

KEPT = Heldout({"q1": "how do vaccines work"}, {"q1": {"Vaccine": 1.0}}, "a test plugin")


class KeepsJudgements:
    @staticmethod
    @hookimpl
    def heldout_judgements(model):
        return KEPT if model == "models/ours" else None


def test_the_core_takes_heldout_judgements_from_the_plugin_that_knows_the_model(monkeypatch):
    monkeypatch.setenv("INDEXER_PLUGINS", "")
    host = Host(make_plugin_manager(extra_plugins=[KeepsJudgements]))
    assert heldout_from_model("models/ours", host) is KEPT
    assert heldout_from_model("models/other", host) is None


def test_the_feedback_plugin_answers_with_the_split_finetune_recorded(monkeypatch, tmp_path):
    monkeypatch.setenv("INDEXER_PLUGINS", "feedback")
    from indexer_feedback.finetune import RECORD

    host = Host(make_plugin_manager())
    assert heldout_from_model(str(tmp_path), host) is None  # not a fine-tuned model
    (tmp_path / RECORD).write_text(json.dumps({"heldout": [
        {"query": "how do vaccines work", "query_id": "q1", "doc_id": "Vaccine", "relevance": 2.0},
        {"query": "how do vaccines work", "query_id": "q1", "doc_id": "Virus", "relevance": 0.0}]}))
    heldout = heldout_from_model(str(tmp_path), host)
    assert heldout.queries == {"q1": "how do vaccines work"}
    assert heldout.qrels == {"q1": {"Vaccine": 2.0, "Virus": 0.0}}
    assert RECORD in heldout.origin


def test_the_version_commands_are_the_cores_and_work_without_the_feedback_plugin(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "INDEXER_DISABLE_PLUGINS": "feedback"}
    helps = {}
    for command in (["reembed", "--help"], ["alias", "list", "--help"], ["prune", "--help"]):
        out = subprocess.run([sys.executable, "-m", "indexer.cli", *command], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        helps[command[0]] = out.stdout
    help_text = helps["reembed"]
    assert "--promote-if-better" in help_text and "--qrels" in help_text
    # a database without tables: the core's own error, before any work
    out = subprocess.run([sys.executable, "-m", "indexer.cli", "prune", "--db", str(tmp_path / "none.lancedb")],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "no alias is set" in out.stderr
