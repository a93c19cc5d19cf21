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

from .publish import PublishSettings
from .sink import HubSink

__all__ = ["HubSink"]


@hookimpl
def register_sinks(register):
    register("hub", HubSink)


@hookimpl
def register_commands(cli):
    cli.add_command(publish)
    cli.add_command(import_)


def settings_flags(command):
    """One flag per :class:`PublishSettings` option (``repo_id`` -> ``--repo-id``), with its declared description and
    default: the ``publish`` command and the ``hub`` sink's ``--option hub.NAME`` take the same declaration."""
    types = {"int": click.INT, "float": click.FLOAT}
    for row in reversed(PublishSettings.describe()):
        flag = "--" + row["name"].replace("_", "-")
        default = "" if row["default"] in (None, "", False) else f" (default: {row['default']})"
        if row["type"] == "bool":
            command = click.option(flag, is_flag=True, default=None, help=row["description"] + ".")(command)
        else:
            command = click.option(flag, type=types.get(row["type"], str), required=row["name"] == "repo_id",
                                   help=row["description"] + default + ".")(command)
    return command


@click.command()
@click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True)
@click.option("--table", help="Table or alias (default: the alias 'current', else the only table).")
@settings_flags
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
