"""Publishing embedded datasets to the Hugging Face Hub, and loading them back without re-embedding.

* the ``hub`` sink: ``indexer build SRC --sink lancedb --sink hub --option hub.repo_id=user/name``;
* ``indexer publish``: publish a table that is already built;
* ``indexer import``: load a published dataset (a folder, or a Hub dataset from the cache or the network) into
  LanceDB, checking that the model that will embed queries is the one that made the vectors.

Python: :func:`indexer_hub.publish.publish_table` and :func:`indexer_hub.publish.import_dataset`.
"""

from __future__ import annotations

import click

from indexer.hookspecs import hookimpl

from .sink import HubSink

__all__ = ["HubSink"]


@hookimpl
def register_sinks(register):
    register("hub", HubSink)


@hookimpl
def register_commands(cli):
    cli.add_command(publish)
    cli.add_command(import_)


@click.command()
@click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True)
@click.option("--table", help="Table or alias (default: the alias 'current', else the only table).")
@click.option("--repo-id", required=True, help="Dataset repository user/name (created when missing).")
@click.option("--private", is_flag=True, help="Create the repository private (an existing one keeps its visibility).")
@click.option("--revision", help="Branch to commit to (created when missing; default: main).")
@click.option("--license", help="License id for the card, e.g. cc-by-sa-4.0 (the demo corpus's).")
@click.option("--dry-run", is_flag=True, help="Write the folder and print the commit plan; no network.")
@click.option("--out", type=click.Path(file_okay=False), help="Dataset folder (default: <db>/_indexer/hub/<table>/dataset).")
@click.option("--max-shard-mb", type=float, help="Most data per parquet file (MB in memory; default 500).")
@click.option("--commit-files", type=int, help="Most files per commit (default 50).")
@click.option("--commit-mb", type=float, help="Most MB per commit (default 10,737).")
@click.option("--source-name", help="NAME[@REVISION] of the source dataset for the card (default: from the build).")
@click.option("--pretty-name", help="Title of the dataset card.")
def publish(db, table, **settings) -> None:
    """Publish a built table as a Hugging Face dataset: parquet files, a dataset card, uploaded in commits
    (reruns skip files already uploaded). Token: HF_TOKEN or `hf auth login`."""
    from .publish import PublishSettings, publish_table

    publish_table(db, table, PublishSettings.from_options(settings))


@click.command("import")
@click.argument("dataset")
@click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True)
@click.option("--table", help="Table to create (default: the published table's name).")
@click.option("--model", help="Model that embeds queries (default: the one the card names); its fingerprint must match.")
@click.option("--revision", help="Dataset revision (branch, tag or commit) to download.")
@click.option("--replace", is_flag=True, help="Overwrite the table when it exists.")
def import_(dataset, db, table, model, revision, replace) -> None:
    """Load DATASET (a folder or a Hub dataset user/name published by indexer) into LanceDB without
    re-embedding; then `indexer search` works on it."""
    from .publish import import_dataset

    import_dataset(dataset, db, table=table, model=model, revision=revision, replace=replace)
