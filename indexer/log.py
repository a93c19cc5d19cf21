"""indexer's one logging tree: every part logs to ``logging.getLogger("indexer.<part>")``.

Messages about work in progress (an index built, a note on a missing setting, a server that answered late) are
log records, not prints; the run summary, progress bars and a command's own result are output and do not go
through here. The ``indexer`` logger carries one handler that writes a record's bare message to standard error,
as the messages looked when each module printed its own, at INFO unless told otherwise: ``indexer -v`` (DEBUG)
and ``indexer -q`` (warnings only) call :func:`configure`, and so can a program that uses the Python API. Records
also propagate to the root logger, so an application's own logging configuration (and pytest's ``caplog``) sees
them; an application that prints them itself can remove the handler with ``configure(handler=False)``.
"""

from __future__ import annotations

import logging
import sys

ROOT = "indexer"
LEVELS = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}


class StderrHandler(logging.StreamHandler):
    """Writes each record's message to whatever ``sys.stderr`` is when it is written (a test's capture, click's
    runner), as ``click.echo(message, err=True)`` did."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the current sys.stderr always wins
        pass


def get_logger(part: str) -> logging.Logger:
    """The logger of ``part`` (``lancedb``, ``hub``, ``tei``...): ``indexer.<part>``, under the tree's handler."""
    _install()
    return logging.getLogger(f"{ROOT}.{part}")


def configure(level: str = "normal", *, handler: bool = True) -> None:
    """Set the tree's level (``quiet``: warnings and errors; ``normal``: also INFO; ``verbose``: also DEBUG) and
    whether its stderr handler is on."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)} (got {level!r})")
    _install()
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS[level])
    mine = [h for h in logger.handlers if isinstance(h, StderrHandler)]
    if handler and not mine:
        logger.addHandler(StderrHandler())
    elif not handler:
        for h in mine:
            logger.removeHandler(h)


_INSTALLED = False


def _install() -> None:
    """The default, once per process: the stderr handler at INFO, unless the level was set already."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    logger = logging.getLogger(ROOT)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.addHandler(StderrHandler())
