"""ColBERT late interaction for indexer (a distribution of its own: ``plugins/indexer_colbert``).

Registers:

* embedder ``colbert`` — per-token vectors from a ColBERT checkpoint (colbert-ai's encoder);
* sink ``colbert`` — a RAGatouille PLAID index of the chunks (``indexer search --sink colbert``);
* sink ``lancedb-multivector`` — the per-token vectors in a LanceDB multivector column, searched with MaxSim;
* commands ``indexer colbert init-checkpoint`` and ``indexer colbert estimate``.

``indexer build SOURCE --late-interaction colbert`` embeds with ``colbert`` into the ``colbert`` sink (add
``--sink colbert --sink lancedb-multivector`` for both). Nothing heavy is imported until a component is used.
"""

from __future__ import annotations

from indexer.hookspecs import hookimpl


@hookimpl
def register_embedders(register):
    from indexer_colbert.embedder import ColBERTEmbedder

    register("colbert", ColBERTEmbedder)


@hookimpl
def register_sinks(register):
    from indexer_colbert.multivector import LanceDBMultivectorSink
    from indexer_colbert.plaid import PLAIDSink

    register("colbert", PLAIDSink)
    register("lancedb-multivector", LanceDBMultivectorSink)


@hookimpl
def register_commands(cli):
    from indexer_colbert.commands import colbert

    cli.add_command(colbert)
