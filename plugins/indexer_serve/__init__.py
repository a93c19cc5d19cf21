"""``indexer serve``: a search service for applications (FastAPI on uvicorn, the model loaded once, concurrent
queries micro-batched into one embedding call), and a page at ``/`` whose thumbs up and down become feedback pairs.

Nothing heavy is imported here: ``indexer --help`` loads this module, and fastapi, uvicorn, torch and lancedb load
only when the command runs (:mod:`indexer_serve.command`).
"""

from __future__ import annotations

from indexer.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    from indexer_serve.command import serve

    cli.add_command(serve)
