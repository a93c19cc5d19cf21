"""Scale out on Modal: the ``modal`` executor (shards in containers, files through a Volume), the ``modal-tei``
embedder (TEI on Modal GPUs) and the ``indexer estimate`` command. The deployable app is :mod:`indexer_modal.app`;
nothing here imports ``modal`` until it is used."""

from __future__ import annotations

from indexer.hookspecs import hookimpl


@hookimpl
def register_executors(register):
    from indexer_modal.executor import ModalExecutor

    register("modal", ModalExecutor)


@hookimpl
def register_embedders(register):
    from indexer_modal.embedder import ModalTEIEmbedder

    register("modal-tei", ModalTEIEmbedder)


@hookimpl
def register_commands(cli):
    from indexer_modal import estimate

    estimate.register(cli)
