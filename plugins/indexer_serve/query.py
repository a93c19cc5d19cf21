"""What a request may ask: structured filters turned into a SQL predicate the server quotes itself, and the
words of a query that a full-text match would have matched, for highlighting.

A filter over HTTP is ``{field: value}`` or ``{field: [values]}`` on the table's filterable columns; the server
writes the predicate. A raw SQL predicate never comes from a request.
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache
from typing import Any

# Longest filter value accepted; filters name a category or a number, not a document.
MAX_VALUE_CHARS = 200
MAX_VALUES = 50

# A quote is fine inside a word ("Children's", "O'Brien") and is doubled when quoted; anywhere else, or next to
# a semicolon, a comment or a backslash, a value can only be trying to end the literal it is written into. Such
# a value is refused with a 400 rather than searched for, so an injection attempt is visible to the caller.
_LITERAL_BREAKERS = re.compile(r"(?<!\w)['\"]|['\"](?!\w)|;|--|/\*|\*/|\\|[\x00-\x1f\x7f]")


class BadFilter(ValueError):
    """A filter the server will not turn into a predicate; the message names the problem."""


def sql_predicate(conditions: dict[str, Any], kinds: dict[str, str]) -> str | None:
    """The predicate for ``{field: value or [values]}`` (fields ANDed, the values of one field ORed), with every
    value quoted as a literal of its column's kind (``kinds``: column -> "string", "int", "float", "bool" or
    "strings", from ``Sink.filterable_types``)."""
    parts = []
    for field, given in conditions.items():
        if field not in kinds:
            raise BadFilter(f"unknown filter field {field!r}; filterable fields: {', '.join(kinds) or 'none'}")
        values = given if isinstance(given, list) else [given]
        if not values or len(values) > MAX_VALUES:
            raise BadFilter(f"filter field {field!r} takes 1 to {MAX_VALUES} values (got {len(values)})")
        literals = ", ".join(_literal(field, v, kinds[field]) for v in values)
        column = f"`{field}`"  # a known column name, backquoted: names may hold spaces or dashes
        if kinds[field] == "strings":  # a list column: any of its items equals any of the values
            parts.append(f"array_has_any({column}, [{literals}])")
        else:
            parts.append(f"{column} = {literals}" if len(values) == 1 else f"{column} IN ({literals})")
    return " AND ".join(parts) or None


def parse_pairs(items: list[str]) -> dict[str, list[str]]:
    """``["topic:People", "topic:History"]`` (the GET form) -> ``{"topic": ["People", "History"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        field, colon, value = item.partition(":")
        if not colon or not field:
            raise BadFilter(f"filter {item!r}: expected FIELD:VALUE, e.g. topic:People")
        out.setdefault(field, []).append(value)
    return out


def _literal(field: str, value: Any, kind: str) -> str:
    if kind in ("string", "strings"):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise BadFilter(f"filter field {field!r} holds text; got {type(value).__name__} {value!r}")
        text = str(value)
        if len(text) > MAX_VALUE_CHARS:
            raise BadFilter(f"filter value for {field!r} is longer than {MAX_VALUE_CHARS} characters")
        if _LITERAL_BREAKERS.search(text):
            raise BadFilter(f"filter value for {field!r} holds quotes, a semicolon, a comment, a backslash or a "
                            f"control character outside a word: {text[:60]!r}; values are plain text, not SQL")
        return "'" + text.replace("'", "''") + "'"
    if kind == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower()
        raise BadFilter(f"filter field {field!r} holds true or false; got {value!r}")
    number = _number(value, integer=kind == "int")
    if number is None:
        raise BadFilter(f"filter field {field!r} holds {'whole numbers' if kind == 'int' else 'numbers'}; got {value!r}")
    return repr(number)


def _number(value: Any, integer: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):  # GET parameters arrive as text
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            return None
    if integer:
        return value if isinstance(value, int) else (int(value) if isinstance(value, float) and value.is_integer() else None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# --------------------------------------------------------------------------------------------------------------
# Highlighting

# The English stop words lancedb's full-text index leaves out by default (tantivy's list): never highlighted.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split())
_WORD = re.compile(r"\w+")


def _fold(word: str) -> str:
    """Lower case without accents, as the index's default lower_case and ascii_folding leave a word."""
    word = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in word if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def _stemmer():
    # Snowball's English stemmer: the algorithm of the full-text index's default English stemming (tantivy's),
    # so "vaccines" marks "vaccinated" exactly when a text search would have matched it.
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str | None:
    """The word as the full-text index keeps it (folded, stemmed); None for a stop word, which it leaves out."""
    # Every word of every hit goes through here; a corpus' vocabulary repeats, so a cache keeps folding and even
    # snowballstemmer's pure-Python fallback (without PyStemmer) off the request's critical path.
    folded = _fold(word)
    return None if folded in STOP_WORDS else _stemmer().stemWord(folded)


def query_stems(query: str) -> set[str]:
    return {s for w in _WORD.findall(query) if (s := stem(w))}


def highlights(text: str, stems: set[str]) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` that match a query word (after folding case and accents, and
    English stemming), in order."""
    if not stems:
        return []
    return [m.span() for m in _WORD.finditer(text) if stem(m.group()) in stems]
