"""Errors the core raises on purpose. Each message says what to change."""


class IndexerError(Exception):
    """Base class for errors indexer reports to the user without a traceback."""


class ConfigError(IndexerError):
    """Bad configuration, found before any work starts."""


class BadInputError(IndexerError):
    """A record that cannot be indexed; the run skips it and reports it."""
