"""indexer: turn a text corpus into a search index and a published embedded dataset.

The Python API lives in :mod:`indexer.api` and is re-exported here lazily, so ``import indexer`` stays cheap.
"""

__version__ = "0.1.0"

_API = {"build", "reembed", "search", "search_batch", "evaluate", "info", "BuildConfig"}


def __getattr__(name):
    if name in _API:
        from indexer import api

        return getattr(api, name)
    raise AttributeError(name)
