"""The feedback loop: capture (query → relevant passage) pairs and fine-tune the embedding model on them. Re-embedding
into a new model-versioned table, aliases and pruning are the core's (:mod:`indexer.versions`); this plugin tells
the core which held-out judgements a model it fine-tuned is scored on (the ``heldout_judgements`` hook), so
``indexer reembed --promote-if-better`` promotes it only when held-out retrieval got better.

* store ``lancedb``: pairs in the LanceDB table ``_feedback`` of the index's database (:mod:`indexer_feedback.store`);
* :class:`FeedbackLog`: the Python API an application logs clicks and thumbs with;
* commands ``feedback add|import|export|stats``, ``finetune``;
* ``tune-search``: the search mode and fusion that win on held-out feedback, recorded with the table.

Nothing heavy is imported here: lancedb, torch and sentence-transformers load inside the functions that use them.
"""

from __future__ import annotations

from indexer.hookspecs import hookimpl
from indexer_feedback.store import FeedbackLog, LanceDBFeedbackStore

__all__ = ["FeedbackLog", "LanceDBFeedbackStore"]


@hookimpl(trylast=True)
def register_feedback_stores(register):
    register("lancedb", LanceDBFeedbackStore)


@hookimpl
def heldout_judgements(model):
    from indexer_feedback.judgements import recorded_heldout

    return recorded_heldout(model)


@hookimpl
def register_commands(cli):
    from indexer_feedback.commands import register

    register(cli)
