"""Every hook a plugin can implement. This file is the contract between the core and its plugins.

Rules that hold for every hook:

* The core always calls hooks with keyword arguments, so an implementation may accept any subset of them.
* A hook changes only by gaining arguments; existing arguments keep their meaning.
* ``register_*`` hooks are called once, when the plugin manager is built. Each receives a ``register`` callback
  taking ``(name, cls)``; the core builds a name → class registry per component kind from the calls. Two plugins
  registering the same name is an error unless one of them is marked ``trylast=True`` (the built-ins' fallbacks
  are), in which case the other one wins.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("indexer")
hookimpl = pluggy.HookimplMarker("indexer")


# --------------------------------------------------------------------------------------------------------------
# Components. Each component class subclasses the matching base in ``indexer.components``.
# --------------------------------------------------------------------------------------------------------------


@hookspec
def register_sources(register):
    """Register source classes, which turn a path or dataset name into shards of documents.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`indexer.components.Source`.
        A source class also states which inputs it can read (``Source.can_read``), so ``indexer build PATH``
        picks one without ``--source``.
    """


@hookspec
def register_chunkers(register):
    """Register chunker classes, which cut documents into chunks.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`indexer.components.Chunker`.
    """


@hookspec
def register_embedders(register):
    """Register embedder classes, which turn chunk texts (or token ids) into vectors.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`indexer.components.Embedder`.
    """


@hookspec
def register_sinks(register):
    """Register sink classes, which store embedded chunks (and, when they can, search them).

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`indexer.components.Sink`.
    """


@hookspec
def register_executors(register):
    """Register executor classes, which schedule shards onto processes, machines or containers.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`indexer.components.Executor`.
    """


@hookspec
def register_feedback_stores(register):
    """Register feedback store classes, which keep (query → relevant passage) pairs for fine-tuning.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`indexer.components.FeedbackStore`.
    """


# --------------------------------------------------------------------------------------------------------------
# Command line and events.
# --------------------------------------------------------------------------------------------------------------


@hookspec
def register_commands(cli):
    """Add commands to the ``indexer`` command line.

    Called once when the CLI starts. Keep imports inside the command bodies so ``indexer --help`` stays fast.

    :param cli: the top-level :class:`click.Group`; call ``cli.command()`` / ``cli.add_command()`` on it.
    """


@hookspec(firstresult=True)
def heldout_judgements(model):
    """The held-out judgements to score a re-embedded table on, for a model the plugin knows (e.g. one it
    fine-tuned, with the split it held out from training).

    Called by ``indexer reembed`` (:func:`indexer.versions.reembed`) when no qrels were given; the first
    implementation that returns something other than None wins.

    :param model: the new model's id or path, as given to ``indexer reembed --model``.
    :return: an :class:`indexer.versions.Heldout`, or None when the plugin has no judgements for this model.
    """


@hookspec
def run_finished(summary):
    """Called after every build or re-embed run, with its summary, whether it succeeded or not.

    Every implementation is called; return values are ignored. Use it to report, notify or export metrics.

    :param summary: the :class:`indexer.summary.RunSummary` of the run.
    """
