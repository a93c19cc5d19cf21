"""The feedback loop's commands: ``feedback add|import|export|stats``, ``finetune`` and ``tune-search``. Thin layers
over the modules beside this one; heavy imports happen inside the command bodies. (``reembed``, ``alias`` and
``prune`` are the core's, :mod:`indexer.cli`.)"""

from __future__ import annotations

import json

import click

from indexer.cli import db_option as DB, work_dir_option as WORK_DIR
from indexer.versions import METRICS

STORE = click.option("--store", default="lancedb", show_default=True, help="Feedback store plugin.")


def _log(db: str, store: str):
    from indexer_feedback.store import FeedbackLog

    return FeedbackLog(db, store=store)


@click.group()
def feedback() -> None:
    """Judgements of the form query → relevant chunk or document, kept for fine-tuning."""


@feedback.command("add")
@click.argument("query")
@click.argument("positive_id")
@click.option("--relevance", type=float, default=1.0, show_default=True, help="Graded relevance; 0 = judged not relevant.")
@click.option("--negative", "negatives", multiple=True, help="Id of a passage that does not answer QUERY (repeat).")
@click.option("--text", "positive_text", help="The passage's text, when POSITIVE_ID is not in the index.")
@click.option("--source", default="cli", show_default=True, help="Where the judgement came from (click, thumbs, editor…).")
@click.option("--query-id", help="An id for the query (default: a hash of its text).")
@DB
@STORE
def feedback_add(query, positive_id, relevance, negatives, positive_text, source, query_id, db, store) -> None:
    """Record that POSITIVE_ID (a chunk id such as Vaccine#0, or a document id) answers QUERY."""
    new = _log(db, store).add(query, positive_id, relevance=relevance, negative_ids=negatives,
                              positive_text=positive_text, source=source, query_id=query_id)
    click.echo("added" if new else "already stored: judgement updated", err=True)


@feedback.command("import")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--qrels", type=click.Path(dir_okay=False), help="BEIR qrels TSV (query-id, corpus-id, score).")
@click.option("--queries", type=click.Path(dir_okay=False), help="The BEIR queries jsonl the qrels refer to.")
@click.option("--source", help="Source label for every imported pair (default: the file's name).")
@DB
@STORE
def feedback_import(path, qrels, queries, source, db, store) -> None:
    """Import pairs from a jsonl file (PATH), or BEIR judgements (--qrels with --queries).

    BEIR scores are kept as graded relevance; score-0 rows are kept as pairs judged not relevant, which
    fine-tuning uses as that query's explicit negatives."""
    log = _log(db, store)
    if qrels or queries:
        if not (qrels and queries) or path:
            raise click.UsageError("BEIR import takes --qrels and --queries together, and no PATH")
        report = log.import_qrels(qrels, queries, source)
    elif path:
        report = log.import_jsonl(path, source)
    else:
        raise click.UsageError("give a jsonl PATH, or --qrels and --queries")
    click.echo(report.render(), err=True)


@feedback.command("export")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--qrels", type=click.Path(dir_okay=False), help="Write BEIR qrels here instead (with --queries).")
@click.option("--queries", type=click.Path(dir_okay=False), help="Write the BEIR queries jsonl here.")
@DB
@STORE
def feedback_export(path, qrels, queries, db, store) -> None:
    """Write every stored pair to PATH as jsonl (the format `feedback import` reads), or as BEIR qrels + queries."""
    log = _log(db, store)
    if qrels or queries:
        if not (qrels and queries):
            raise click.UsageError("--qrels and --queries go together")
        n = log.export_qrels(qrels, queries)
    elif path:
        n = log.export_jsonl(path)
    else:
        raise click.UsageError("give a PATH, or --qrels and --queries")
    click.echo(f"exported {n:,} pairs", err=True)


@feedback.command("stats")
@click.option("--json", "as_json", is_flag=True)
@DB
@STORE
def feedback_stats(as_json, db, store) -> None:
    """How many pairs, queries and grades the store holds, and where they came from."""
    from indexer_feedback.store import render_stats

    s = _log(db, store).stats()
    click.echo(json.dumps(s, indent=1) if as_json else render_stats(s))


# --------------------------------------------------------------------------------------------------------------


@click.command()
@DB
@click.option("--table", help="Table or alias whose passages and vectors the pairs refer to (default: current).")
@click.option("--model", help="Base model (default: the table's model).")
@click.option("--output", type=click.Path(file_okay=False), help="Folder for the new model (default: <work dir>/models/…).")
@STORE
@WORK_DIR
@click.option("--holdout", type=float, default=0.2, show_default=True, help="Fraction of documents held out.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the held-out split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--max-steps", type=int, default=-1, help="Stop after this many steps (overrides --epochs).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Pairs per batch (in-batch negatives).")
@click.option("--learning-rate", type=float, default=5e-5, show_default=True)
@click.option("--warmup", type=float, default=0.1, show_default=True, help="Warm-up, as a fraction of the steps.")
@click.option("--loss", type=click.Choice(["mnrl", "cached-mnrl"]), default="mnrl", show_default=True,
              help="MultipleNegativesRankingLoss, or its cached variant (big batches in bounded memory).")
@click.option("--mini-batch-size", type=int, default=32, show_default=True, help="cached-mnrl: texts per forward pass.")
@click.option("--negatives", type=int, default=1, show_default=True, help="Hard negatives per pair (0: in-batch only).")
@click.option("--mine-k", type=int, default=30, show_default=True, help="Documents searched per query when mining.")
@click.option("--margin", type=float, default=0.05, show_default=True,
              help="A mined negative scores below (1 - margin) x the positive (near-ties are likely relevant).")
@click.option("--max-seq-length", type=int, help="Truncate training texts to this many tokens (default: the model's).")
@click.option("--eval-max-chunks", type=int, default=5000, show_default=True,
              help="Largest table evaluated whole; above it, held-out documents plus top candidates.")
@click.option("--device", default="auto", show_default=True)
@click.option("--remote", type=click.Choice(["modal"]), help="Train on a Modal GPU instead of this machine.")
@click.option("--gpu", help="Modal GPU type (default: INDEXER_FINETUNE_GPU or L4).")
@click.option("--no-progress", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fine-tune record as JSON.")
def finetune(remote, gpu, no_progress, as_json, **settings) -> None:
    """Fine-tune the embedding model on the stored feedback pairs (hard negatives mined from the index, a held-out
    split measured before and after); saves the model with its card."""
    from indexer_feedback.finetune import FinetuneSettings, finetune as run, render

    record = run(FinetuneSettings(progress=not no_progress, **settings), remote=remote, gpu=gpu)
    if as_json:
        click.echo(json.dumps({k: v for k, v in record.items() if k != "heldout"}, indent=1))
    else:
        click.echo(render(record))


@click.command("tune-search")
@DB
@click.option("--table", help="Table or alias (default: the alias 'current', else the only table).")
@click.option("--metric", type=click.Choice(METRICS), default="ndcg@10",
              show_default=True, help="What decides.")
@click.option("--pairs", type=click.Choice(["auto", "heldout", "all"]), default="auto", show_default=True,
              help="Judgements to score on: auto = the held-out split when the table's model was fine-tuned on this "
                   "feedback, else every pair.")
@click.option("--holdout", type=float, help="Fraction of documents held out (default: the fine-tune's, else 0.2).")
@click.option("--split-seed", type=int, help="Seed of the held-out split (default: the fine-tune's, else 0).")
@click.option("--dry-run", is_flag=True, help="Score the settings but record nothing.")
@click.option("--json", "as_json", is_flag=True)
@STORE
@WORK_DIR
def tune_search(db, table, metric, pairs, holdout, split_seed, dry_run, as_json, store, work_dir) -> None:
    """Score search modes and fusion settings on the table's judged queries; record the best with the table,
    where `indexer search` and the API find it."""
    from indexer_feedback.tuning import tune_search as run

    outcome = run(db, table, metric=metric, pairs=pairs, holdout=holdout, split_seed=split_seed,
                  store=store, work_dir=work_dir, dry_run=dry_run)
    click.echo(json.dumps(outcome.to_dict(), indent=1) if as_json else outcome.render())


def register(cli: click.Group) -> None:
    for command, name in ((feedback, "feedback"), (finetune, "finetune"), (tune_search, "tune-search")):
        if name not in cli.commands:  # the core (or another plugin) may bring its own
            cli.add_command(command, name)
