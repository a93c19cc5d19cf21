"""``indexer colbert ...``: make a ColBERT checkpoint; estimate an index's size and memory before building it."""

from __future__ import annotations

import json

import click


@click.group()
def colbert() -> None:
    """ColBERT late interaction: checkpoints and index estimates."""


@colbert.command("init-checkpoint")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--from", "source", required=True, help="A BERT-family encoder (folder or Hub id in the cache).")
@click.option("--dim", type=int, default=128, show_default=True, help="ColBERT's vector dimension.")
@click.option("--doc-maxlen", type=int, default=256, show_default=True, help="Most tokens per chunk, markers included.")
@click.option("--query-maxlen", type=int, default=32, show_default=True, help="Shortest query, in tokens.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random projection.")
def init_checkpoint(out, source, dim, doc_maxlen, query_maxlen, seed) -> None:
    """Write a ColBERT checkpoint to OUT: an encoder plus a seeded random projection (an untrained ColBERT head)."""
    from indexer_colbert.checkpoint import init_checkpoint as make
    from indexer_colbert.quiet import quiet

    with quiet():
        path = make(source, out, dim=dim, doc_maxlen=doc_maxlen, query_maxlen=query_maxlen, seed=seed)
    click.echo(f"wrote ColBERT checkpoint {path} ({dim} dims, from {source})", err=True)


@colbert.command()
@click.argument("source")
@click.option("--model", help="ColBERT checkpoint (default: colbert-ir/colbertv2.0).")
@click.option("--source-type", help="Source plugin (default: detected from SOURCE).")
@click.option("--text-field", help="Field holding the text (default: text).")
@click.option("--title-field", help="Field whose value is joined before the text.")
@click.option("--max-tokens", type=int, help="Most tokens per chunk (default: what the model takes).")
@click.option("--gpu-memory", type=float, help="Check against this much GPU memory, in GiB (40 or 80: an A100).")
@click.option("--option", "options", multiple=True,
              help="Plugin option KIND.NAME=VALUE, as for indexer build: colbert.nbits=4, colbert.use_faiss=true, ...")
@click.option("--json", "as_json", is_flag=True)
def estimate(source, model, source_type, text_field, title_field, max_tokens, gpu_memory, options, as_json) -> None:
    """Chunk SOURCE (no encoding) and estimate its ColBERT index: size on disk, memory to build and search it, and
    whether it fits this machine."""
    from indexer.cli import option_pairs
    from indexer.config import BuildConfig
    from indexer_colbert.estimate import GiB, available_memory, estimate_source

    config = BuildConfig.load(None, source=source, model=model, source_type=source_type, text_field=text_field,
                              title_field=title_field, max_tokens=max_tokens, late_interaction="colbert",
                              progress=False, options=option_pairs(options))
    est = estimate_source(config)
    ram, gpu = available_memory()
    gpu = int(gpu_memory * GiB) if gpu_memory else gpu
    problems = est.problems(ram, gpu)
    if as_json:
        click.echo(json.dumps({**est.__dict__, "problems": problems}, indent=1))
    else:
        click.echo(est.render())
        click.echo("fits this machine" if not problems else "does NOT fit: " + "; ".join(problems))
    if problems:
        raise SystemExit(1)
