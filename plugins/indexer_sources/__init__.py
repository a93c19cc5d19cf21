"""The built-in sources: local files (jsonl, parquet, csv, text, BEIR) and Hugging Face datasets (on disk, Hub).

Registered ``trylast`` so that a third-party plugin may replace any of them under the same name.
"""

from __future__ import annotations

from indexer.hookspecs import hookimpl

from .files import BeirSource, CsvSource, JsonlSource, ParquetSource, TextSource
from .hf import HfDiskSource, HubSource

SOURCES = (JsonlSource, ParquetSource, CsvSource, TextSource, HfDiskSource, HubSource, BeirSource)


@hookimpl(trylast=True)
def register_sources(register):
    for cls in SOURCES:
        register(cls.name, cls)
