"""The ``indexer serve`` command. fastapi, uvicorn, torch and lancedb are imported when it runs, not before."""

from __future__ import annotations

import click


@click.command()
@click.option("--db", envvar="INDEXER_DB", default="index.lancedb", show_default=True, help="LanceDB folder or URI.")
@click.option("--table", help="Table or alias to serve (default: the alias 'current', else the only table). An alias "
                              "is followed: when it moves, the server switches tables without a restart.")
@click.option("--work-dir", envvar="INDEXER_WORK_DIR", help="Run state folder (default: <db>/_indexer).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs a token, and then every request sends it.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="INDEXER_SERVE_TOKEN", show_envvar=True,
              help="Bearer token required for feedback writes (and for every request off loopback). Prefer the "
                   "environment variable: a command line is visible to other users of the machine.")
@click.option("--batch-wait-ms", type=click.FloatRange(0, 100), default=2.0, show_default=True,
              help="How long an idle batcher waits for more queries to join the first.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Most queries searched in one call.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(db, table, work_dir, host, port, token, batch_wait_ms, max_batch, log_level) -> None:
    """Serve the index over HTTP: search (GET/POST /search), feedback (POST /feedback), /tables, /health,
    OpenAPI docs at /docs and a search page at / whose thumbs up and down are recorded as feedback."""
    from indexer.log import configure

    try:
        import uvicorn

        from indexer_serve.app import ServeConfig, create_app
    except ImportError as exc:
        raise click.ClickException(f"indexer serve needs fastapi and uvicorn ({exc.name} is missing): "
                                   "pip install 'indexer[serve]'") from None

    # indexer's logging tree (the server's own lines under indexer.serve), at --log-level, formatted as uvicorn's
    configure(log_level, fmt="%(levelname)s:     %(name)s: %(message)s")
    config = ServeConfig(db=db, table=table, work_dir=work_dir, host=host, token=token or None,
                         batch_wait_ms=batch_wait_ms, max_batch=max_batch)
    app = create_app(config)
    click.echo(f"indexer serve: {db} on http://{host}:{port}/ (docs at /docs)"
               + ("; feedback needs the token" if token else "; no token set: feedback writes are refused"), err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
