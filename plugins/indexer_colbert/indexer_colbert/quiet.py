"""colbert-ai and RAGatouille print progress to stdout and raise deprecation warnings on every call; indexer's
stdout carries search results (``indexer search --json``), so their chatter (and colbert-ai's progress bars)
goes to stderr when ``INDEXER_COLBERT_VERBOSE=1`` and nowhere otherwise."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    verbose = os.environ.get("INDEXER_COLBERT_VERBOSE", "") not in ("", "0")
    if verbose:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    tqdm_disable = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # colbert-ai's own progress bars, per index chunk and per file loaded
    try:
        # tqdm reads TQDM_DISABLE when it is imported, and it may be already: its bars go to sys.stderr, resolved
        # when each bar starts, so stderr goes to devnull too
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
                contextlib.redirect_stderr(devnull), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if tqdm_disable is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_disable
