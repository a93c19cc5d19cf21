"""The ``indexer`` command line: a thin layer over :mod:`indexer.api`. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from indexer import versions
from indexer.errors import IndexerError


def option_pairs(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--option embedder.precision=exact`` → ``{"embedder": {"precision": "exact"}}`` (values parsed as JSON when they can be)."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        kind, dot, name = key.partition(".")
        if not eq or not dot:
            raise click.BadParameter(f"{item!r}: expected KIND.NAME=VALUE, e.g. embedder.precision=exact", param_hint="--option")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(kind, {})[name] = parsed
    return out


#: Options shared by every command that works on a database and its run state (plugins' commands use them too).
db_option = click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True,
                         help="LanceDB folder or URI.")
work_dir_option = click.option("--work-dir", envvar="INDEXER_WORK_DIR", help="Run state folder (default: <db>/_indexer).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="indexer")
@click.option("-v", "--verbose", is_flag=True, help="Also show debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Show only warnings and errors (the results and the run summary stay).")
def cli(verbose: bool, quiet: bool) -> None:
    """Turn a text corpus into a search index and an embedded dataset; search it; measure it."""
    from indexer.log import configure
    from indexer.memory import limit_malloc_arenas

    if verbose and quiet:
        raise click.UsageError("pass -v (more messages) or -q (fewer), not both")
    configure("verbose" if verbose else "quiet" if quiet else "normal")
    limit_malloc_arenas()  # before any command starts threads: builds, index builds, searches


def embedding_options(f):
    """How to embed and where to run: shared by ``build`` and ``reembed``."""
    for option in reversed([
        click.option("--embedder", help="Embedder plugin (default: local)."),
        click.option("--device", help="auto, cpu, cuda, mps."),
        click.option("--precision", help="auto (the fastest this hardware runs well; int8 only where a search of a "
                     "corpus sample ranks as fp32 does), exact, fast, fp32, bf16, fp16, int8 (CPU)."),
        click.option("--batch-tokens", type=int, help="Padded tokens per embedding batch (default: the embedder's; "
                     "local: 4096 on CPU, 16384 on GPU)."),
        click.option("--executor", help="Executor plugin (default: local)."),
        click.option("--workers", type=int, help="Worker processes/containers, for executors that use them."),
        click.option("--option", "options", multiple=True, help="Plugin option KIND.NAME=VALUE: KIND is source, "
                     "chunker, embedder, executor or a sink name, e.g. embedder.max_batch_size=256, lancedb.fts=false."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
    ]):
        f = option(f)
    return f


def run_overrides(options: tuple[str, ...], no_progress: bool) -> dict[str, Any]:
    """``--option`` pairs and ``--no-progress`` as BuildConfig settings."""
    out: dict[str, Any] = {}
    if options:
        out["options"] = option_pairs(options)
    if no_progress:
        out["progress"] = False
    return out


@cli.command()
@click.argument("source", required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="INDEXER_CONFIG", help="TOML file with any of these settings.")
@click.option("--source-type", help="Source plugin (default: detected from SOURCE).")
@click.option("--id-field", help="Field holding the document id (default: id, then _id).")
@click.option("--text-field", help="Field holding the text (default: text).")
@click.option("--title-field", help="Field whose value is joined before the text.")
@click.option("--metadata-field", "metadata_fields", multiple=True, help="Field kept as metadata (repeat; * for all).")
@click.option("--max-doc-chars", type=int, help="Longer documents are skipped and reported (default 5,000,000).")
@click.option("--chunker", help="Chunker plugin (default: token).")
@click.option("--max-tokens", type=int, help="Most tokens per chunk (default: what the model takes).")
@click.option("--overlap", type=int, help="Tokens shared by consecutive chunks (default 32).")
@click.option("--min-tokens", type=int, help="Smallest tail worth its own chunk (default 16).")
@click.option("--boundaries", type=click.Choice(["token", "sentence", "paragraph"]), help="Where chunks prefer to end.")
@click.option("--model", envvar="INDEXER_MODEL", help="Model id or path (default: sentence-transformers/all-MiniLM-L6-v2).")
@click.option("--late-interaction", metavar="NAME", help="Late-interaction indexing with plugin NAME (e.g. colbert): its embedder and, unless --sink is given, its sink.")
@click.option("--sink", "sinks", multiple=True, help="Sink plugin (repeat; default: lancedb).")
@click.option("--db", envvar="INDEXER_DB", help="LanceDB folder or URI (default: index.lancedb).")
@click.option("--table", help="Table name (default: one per model, <model>-<fingerprint>).")
@click.option("--work-dir", envvar="INDEXER_WORK_DIR", help="Run state folder (default: <db>/_indexer).")
@click.option("--shard-size", help="Cut bigger files into shards of this size: 64MB (the default), 1GB, 100000rows.")
@click.option("--strict", is_flag=True, default=None, help="Exit non-zero when any record was skipped.")
@click.option("--summary-json", type=click.Path(dir_okay=False), help="Also write the run summary as JSON here.")
@embedding_options
def build(source, config_file, options, no_progress, summary_json, **settings) -> None:
    """Chunk, embed and index SOURCE (a file, folder, glob or Hub dataset name). Reruns resume and skip."""
    from indexer import api

    for key in ("metadata_fields", "sinks"):
        settings[key] = list(settings[key]) or None
    settings.update(run_overrides(options, no_progress))
    summary = api.build(source, config=config_file, **settings)
    click.echo(summary.render(), err=True)
    if summary_json:
        with open(summary_json, "w") as f:
            json.dump(summary.to_dict(), f, indent=1)
    if summary.documents == 0 and summary.bad and summary.shards_skipped < summary.shards:
        raise SystemExit("nothing could be indexed: every record was skipped (see above)")
    if summary.bad and settings.get("strict"):
        raise SystemExit(f"{len(summary.bad)} record(s) skipped and --strict was given")


def search_options(f):
    """The options that say how to rank: shared by every command that searches."""
    for option in reversed([
        click.option("--mode", type=click.Choice(["dense", "text", "hybrid"]),
                     help="dense (vectors), text (BM25 full text) or hybrid (both, fused). Default: what "
                          "`indexer tune-search` recorded for the table, else hybrid."),
        click.option("--fusion", type=click.Choice(["rrf", "convex"]),
                     help="Hybrid: a convex combination of normalised scores (default), or reciprocal-rank fusion."),
        click.option("--rrf-k", type=click.IntRange(min=1), help="Hybrid rrf: the rank constant (default 60)."),
        click.option("--text-weight", type=click.FloatRange(0, 100),
                     help="Hybrid: the text ranking's weight against the dense ranking's 1 (default 0.5)."),
        click.option("--fuse", type=click.Choice(["doc", "chunk"]),
                     help="Hybrid with --by-doc: fuse document rankings (doc) or chunk rankings, then aggregate."),
        click.option("--where", "filter", help="SQL predicate on the table's columns, applied before ranking, e.g. "
                                               "\"topic = 'Science'\" (metadata fields are columns; so is doc_id)."),
    ]):
        f = option(f)
    return f


@cli.command()
@click.argument("query", required=False)
@click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True)
@click.option("--table", help="Table or alias (default: the alias 'current', else the only table).")
@click.option("-k", "--k", "k", type=int, help="Results per query (default 10; 100 with --queries).")
@click.option("--by-doc", is_flag=True, help="Rank documents by their best chunk instead of chunks.")
@search_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: the settings used and the hits.")
@click.option("--queries", type=click.Path(dir_okay=False), help="Batch mode: a queries file (BEIR jsonl or TSV).")
@click.option("--run-file", type=click.Path(dir_okay=False), help="Batch mode: write a TREC run here.")
@click.option("--tag", default="indexer", show_default=True, help="Run tag for the TREC file.")
@click.option("--sink", default="lancedb", show_default=True, help="Searchable sink holding the index, e.g. colbert for a PLAID index.")
def search(query, db, table, k, by_doc, as_json, queries, run_file, tag, sink, **how) -> None:
    """Search the index for QUERY, or run a batch of --queries into a TREC --run-file."""
    from indexer import api

    if queries:
        if not run_file:
            raise click.UsageError("--queries needs --run-file")
        from indexer.retrieval import read_queries

        results = api.search_batch(read_queries(queries), db=db, table=table, k=k or 100, by_doc=by_doc,
                                   run_file=run_file, tag=tag, sink=sink, **how)
        first = next(iter(results.values()), None)
        ranked = f" ({_ranked_by(first)})" if first is not None else ""
        click.echo(f"wrote {sum(len(h) for h in results.values()):,} results for {len(results):,} queries to "
                   f"{run_file}{ranked}", err=True)
        return
    if not query:
        raise click.UsageError("give a QUERY, or --queries FILE --run-file FILE")
    hits = api.search(query, db=db, table=table, k=k or 10, by_doc=by_doc, sink=sink, **how)
    if as_json:
        click.echo(json.dumps({"mode": hits.settings.mode, "settings": hits.settings.to_dict(),
                               "settings_from": hits.origin, "hits": [h.__dict__ for h in hits]},
                              indent=1, ensure_ascii=False))
        return
    click.echo(_ranked_by(hits), err=True)
    width = 110
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(h.text.split())
        snippet = snippet[: width - 12] + ("…" if len(snippet) > width - 12 else "")
        click.echo(f"{rank:>3}  {h.score:.4f}  {click.style(h.doc_id, bold=True)}  [{h.id}]")
        click.echo(f"           {snippet}")


def _ranked_by(results) -> str:
    origin = {"recorded": "recorded by tune-search", "default": "default", "given": "as given"}[results.origin]
    return f"mode {results.settings.describe()}, {origin}"


@cli.command("eval")
@click.option("--qrels", required=True, type=click.Path(dir_okay=False), help="BEIR qrels TSV or TREC qrels.")
@click.option("--run-file", required=True, type=click.Path(dir_okay=False), help="TREC run file.")
@click.option("--json", "as_json", is_flag=True)
def eval_(qrels, run_file, as_json) -> None:
    """nDCG@10, Recall@100 and MRR@10 of a TREC run."""
    from indexer import api

    m = api.evaluate(qrels, run_file)
    if as_json:
        click.echo(json.dumps(m, indent=1))
        return
    click.echo(f"queries     {m['queries']}" + (f" ({m['queries_without_results']} without results)" if m["queries_without_results"] else ""))
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        click.echo(f"{key:<11} {m[key]:.4f}")


@cli.command()
@click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def info(db, as_json) -> None:
    """Tables in the database: rows, model fingerprint, chunk settings, source, aliases."""
    from indexer import api

    tables = api.info(db)
    if as_json:
        click.echo(json.dumps(tables, indent=1))
        return
    if not tables:
        click.echo(f"{db}: no tables")
    for t in tables:
        meta = t.get("meta") or {}
        model = meta.get("model", {})
        ch = meta.get("chunking") or {}
        alias = f"  (alias: {', '.join(t['aliases'])})" if t.get("aliases") else ""
        click.echo(click.style(t["table"], bold=True) + alias)
        click.echo(f"  rows      {t['rows']:,}")
        click.echo(f"  model     {model.get('name')}  rev {model.get('revision')}  fingerprint {str(model.get('fingerprint'))[:16]}")
        click.echo(f"  vectors   dim {model.get('dimension')}, {model.get('pooling')} pooling, "
                   f"{'normalised' if model.get('normalize') else 'not normalised'}, {model.get('precision')}")
        if (meta.get("embedder") or {}).get("gate"):
            click.echo(f"  precision {meta['embedder']['gate'].get('summary')}")
        click.echo(f"  chunking  max {ch.get('max_tokens')} tokens, overlap {ch.get('overlap')}, min {ch.get('min_tokens')}, "
                   f"boundaries {ch.get('boundaries')} ({ch.get('chunker')})")
        click.echo(f"  source    {meta.get('source')}")
        if t.get("search"):
            from indexer.retrieval import SearchSettings

            how = SearchSettings.from_dict(t["search"]["settings"]).describe()
            click.echo(f"  search    {how} ({'recorded by tune-search' if t['search']['from'] == 'recorded' else 'default'})")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--options", "options", is_flag=True,
              help="Every component's options (--option KIND.NAME=VALUE, [options.KIND] in TOML): name, type, default, "
                   "bounds, secret, description; and the environment variables a component reads.")
def plugins(as_json, options) -> None:
    """Installed plugins, the hooks they implement and the components they register."""
    from indexer.plugins import get_host

    if options:
        described = get_host().describe_options()
        if as_json:
            click.echo(json.dumps(described, indent=1))
        else:
            _print_options(described)
        return
    described = get_host().describe()
    if as_json:
        click.echo(json.dumps(described, indent=1))
        return
    for p in described:
        click.echo(click.style(p["name"], bold=True) + f"  ({p['module']}" + (f", {p['distribution']}" if p["distribution"] else "") + ")")
        click.echo(f"  hooks: {', '.join(p['hooks']) or '-'}")
        for kind, names in p["components"].items():
            for name in names:
                about = p["about"].get(f"{kind}:{name}")
                click.echo(f"  {kind} {name}" + (f": {about}" if about else ""))


def _print_options(described: list[dict[str, Any]]) -> None:
    """One block per component: a row per option, columns aligned within the block."""
    columns = ("name", "type", "default", "bounds", "secret", "description")
    for c in described:
        prefix = c["name"] if c["kind"] == "sink" else c["kind"]
        how = f"; --option {prefix}.NAME=VALUE" if c["kind"] != "feedback_store" else ""
        click.echo(click.style(f"{c['kind'].replace('_', ' ')} {c['name']}", bold=True) + f"  (plugin {c['plugin']}{how})")
        for title, rows in (("options", c["options"]), ("environment", c["environment"])):
            if title == "environment" and not rows:
                continue
            if not rows:
                click.echo("  no options")
                continue
            if title == "environment":
                click.echo("  read from the environment:")
            cells = [[_cell(r, k) for k in columns] for r in rows]
            if title == "environment":
                cells = [[r["env"][0] if r["env"] else r["name"], *cell[1:]] for r, cell in zip(rows, cells)]
            heads = ("variable" if title == "environment" else "name", *columns[1:])
            widths = [max(len(k), *(len(row[i]) for row in cells)) for i, k in enumerate(heads[:-1])]
            click.echo("  " + "  ".join(k.ljust(w) for k, w in zip(heads, widths)) + "  description")
            for row in cells:
                click.echo("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[-1])


def _cell(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if key == "secret":
        return "secret" if value else ""
    if key == "default":
        return "-" if value is None else json.dumps(value) if isinstance(value, (bool, list)) else str(value)
    return str(value)


# -- model versions: re-embed into a new table, aliases, pruning (indexer.versions) ----------------------------


@cli.command()
@click.option("--model", required=True, envvar="INDEXER_MODEL", help="The new model (id or path), e.g. a fine-tuned one.")
@click.option("--from-table", help="Table or alias whose stored chunks to re-embed (default: the alias current, else "
              "the only table).")
@click.option("--table", help="New table name (default: <model>-<fingerprint>).")
@db_option
@work_dir_option
@embedding_options
@click.option("--promote-if-better", is_flag=True, help="Point the alias 'current' at the new table only if the held-out metric rose.")
@click.option("--metric", default="recall@10", show_default=True, type=click.Choice(versions.METRICS))
@click.option("--min-gain", type=float, default=0.0, show_default=True, help="Promote only when the metric rises by more than this.")
@click.option("--qrels", type=click.Path(dir_okay=False), help="Held-out qrels (default: what a plugin keeps for --model, e.g. the fine-tune record beside it).")
@click.option("--queries", type=click.Path(dir_okay=False), help="Queries of --qrels.")
@click.option("--summary-json", type=click.Path(dir_okay=False), help="Write the run summary and evaluation as JSON here.")
def reembed(model, from_table, table, db, work_dir, options, promote_if_better, metric, min_gain, qrels, queries,
            no_progress, summary_json, **settings) -> None:
    """Re-embed the stored chunks of a table with a new model into a new model-versioned table (no source is read,
    nothing is chunked again), and compare both tables on held-out judgements."""
    from indexer.config import BuildConfig

    overrides = {**{k: v for k, v in settings.items() if v is not None}, **run_overrides(options, no_progress)}
    config = BuildConfig.load(None, model=model, table=table, db=db, work_dir=work_dir, **overrides)
    if bool(qrels) != bool(queries):
        raise click.UsageError("--qrels and --queries go together")
    heldout = versions.heldout_from_files(qrels, queries) if qrels else None
    outcome = versions.reembed(config, from_table, promote_if_better=promote_if_better, metric=metric,
                               heldout=heldout, min_gain=min_gain)
    click.echo(outcome.summary.render(), err=True)
    click.echo(outcome.render())
    if summary_json:
        with open(summary_json, "w") as f:
            json.dump(outcome.to_dict(), f, indent=1)


@cli.group()
def alias() -> None:
    """Names that point at tables; searches without --table use 'current'."""


@alias.command("set")
@click.argument("name")
@click.argument("table")
@db_option
@work_dir_option
def alias_set(name, table, db, work_dir) -> None:
    """Point alias NAME at TABLE."""
    from indexer.versions import set_alias

    click.echo(f"{name} -> {set_alias(db, name, table, work_dir)}")


@alias.command("list")
@db_option
@work_dir_option
@click.option("--json", "as_json", is_flag=True)
def alias_list(db, work_dir, as_json) -> None:
    """Every table (model version) with its aliases and last held-out evaluation."""
    from indexer.versions import list_versions

    rows = list_versions(db, work_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        names = f"  <- {', '.join(r['aliases'])}" if r["aliases"] else ""
        click.echo(click.style(r["table"], bold=True) + names)
        click.echo(f"  model {r['model']}, {r['rows']:,} rows")
        if r["eval"]:
            e = r["eval"]
            click.echo(f"  held-out recall@10 {e['after']['recall@10']:.4f} (vs {e['before']['recall@10']:.4f} for {e['against']})")


@cli.command()
@click.argument("tables", nargs=-1)
@db_option
@work_dir_option
@click.option("--dry-run", is_flag=True, help="Only list what would be dropped.")
def prune(tables, db, work_dir, dry_run) -> None:
    """Drop old versions: TABLES, or every table no alias points at, with their run state and vectors."""
    from indexer.versions import prune as run

    doomed = run(db, list(tables) or None, dry_run=dry_run, work_dir=work_dir)
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{verb} {len(doomed)} table(s)" + (": " + ", ".join(doomed) if doomed else ""))


def main(argv: list[str] | None = None) -> None:
    from indexer.plugins import get_host

    try:
        get_host().hook.register_commands(cli=cli)
        cli.main(args=argv, prog_name="indexer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except IndexerError as exc:
        click.echo(f"indexer: error: {exc}", err=True)
        sys.exit(2)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            click.echo(f"indexer: {exc.code}", err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
