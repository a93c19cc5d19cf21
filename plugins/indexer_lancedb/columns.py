"""Metadata as typed columns, so that ``--where "topic = 'Science'"`` is a predicate LanceDB evaluates natively.

A chunk's metadata travels through the pipeline as one JSON object (the ``metadata`` column: sources differ too
much for a fixed schema). The LanceDB sink also stores each metadata field as a top-level column whose type comes
from the values it first sees: bool, int64, float64, string, or a list of strings; anything else (objects, mixed
lists) as its JSON text. A field named like one of indexer's own columns gets a ``meta_`` prefix. Once a column
exists its type is kept: a later value that does not fit it (a word where numbers were) is left null there and
stays, as written, in the JSON ``metadata`` column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from indexer.rows import CHUNK_SCHEMA

# Columns indexer writes itself; metadata fields never take these names.
RESERVED = frozenset([*CHUNK_SCHEMA.names, "vector"])
PREFIX = "meta_"


def column_name(field: str) -> str:
    return PREFIX + field if field in RESERVED or field.startswith("_") else field


def infer_type(values: Iterable[Any]) -> pa.DataType:
    """The column type for a field's values (``None`` values carry no information)."""
    seen = [v for v in values if v is not None]
    if not seen:
        return pa.string()
    if all(isinstance(v, bool) for v in seen):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in seen):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        return pa.float64()
    if all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in seen):
        return pa.list_(pa.string())
    return pa.string()


def value_kind(type_: pa.DataType) -> str:
    """What a filter compares a column of ``type_`` with: "bool", "int", "float", "strings" (a list) or "string"."""
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_integer(type_):
        return "int"
    if pa.types.is_floating(type_):
        return "float"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return "strings"
    return "string"


def convert(value: Any, type_: pa.DataType) -> Any:
    """``value`` as a value of a column of ``type_``, or None when it does not fit."""
    if value is None:
        return None
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if pa.types.is_boolean(type_):
        return value if isinstance(value, bool) else None
    if pa.types.is_integer(type_):
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        return int(value) if isinstance(value, float) and value.is_integer() else None
    if pa.types.is_floating(type_):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if pa.types.is_list(type_) and isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value
    return None


def parse(column: pa.Array | pa.ChunkedArray) -> list[dict[str, Any]]:
    """The ``metadata`` column's JSON objects (``{}`` for null)."""
    return [json.loads(text) if text else {} for text in column.to_pylist()]


def new_fields(objects: list[dict[str, Any]], schema: pa.Schema) -> list[pa.Field]:
    """Columns for the fields of ``objects`` that ``schema`` does not have yet, typed from their values."""
    values: dict[str, list[Any]] = {}
    for obj in objects:
        for key, value in obj.items():
            values.setdefault(key, []).append(value)
    return [pa.field(column_name(key), infer_type(vals)) for key, vals in sorted(values.items())
            if column_name(key) not in schema.names]


def metadata_fields(schema: pa.Schema) -> list[pa.Field]:
    """The metadata columns of a table's schema (everything but indexer's own columns)."""
    return [f for f in schema if f.name not in RESERVED]


def columns_for(objects: list[dict[str, Any]], fields: list[pa.Field]) -> list[pa.Array]:
    """One array per metadata column in ``fields``, its values taken from ``objects``."""
    renamed = [{column_name(k): v for k, v in obj.items()} for obj in objects]
    return [pa.array([convert(obj.get(f.name), f.type) for obj in renamed], type=f.type) for f in fields]
