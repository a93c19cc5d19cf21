"""Component options, declared once: type, default, bounds, description, whether secret, environment variables.

A component (source, chunker, embedder, sink, executor, feedback store) lists the options ``--option KIND.NAME=VALUE``,
a TOML ``[options.KIND]`` table or the Python API's ``options={KIND: {...}}`` may set, as a frozen dataclass that
subclasses :class:`Options`, each field made with :func:`option`::

    @dataclass(frozen=True)
    class LanceDBOptions(Options):
        ann_min_rows: int = option(100_000, "rows before a vector index is built", ge=1)
        fts: bool = option(True, "keep a full-text index on the text")

    class LanceDBSink(Sink):
        name = "lancedb"
        Options = LanceDBOptions

The component's base class (:mod:`indexer.components`) turns the raw keyword arguments into that dataclass with
:meth:`Options.parse` at construction, so ``self.options.fts`` is typed, and an unknown or ill-typed value raises
:class:`~indexer.errors.ConfigError` naming the component, the option, the reason and the known options. The
pipeline parses every ``--option`` table before it constructs anything (:func:`check_build_options`), so a bad
option fails before the source is read. ``indexer plugins --options`` prints :meth:`Options.describe`; the Hub card
and log lines leave out the fields declared ``secret`` (:meth:`Options.secret_names`), whose values never appear in
an error message or a ``repr`` either. Settings that come from the environment (the Modal app's ``INDEXER_MODAL_*``)
name their variables in the declaration (``env=``, or the class's ``env_prefix``), and read them with the same
parser.

Why dataclasses with field metadata and not pydantic: pydantic is not a dependency of the core (only the ``serve``
extra brings it, through FastAPI), and the few types options have (bool, int, float, str, optional, a list of
strings) need a page of code, not a library. A frozen dataclass gives typed attribute access, equality and
``dataclasses.replace``; its fields are the table that ``indexer plugins --options`` prints. Values arrive as
strings (``--option``, environment) or JSON/TOML scalars, so parsing is lenient in form (``"yes"``, ``"100_000"``)
and strict in meaning (``"lots"`` is not a number).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any, ClassVar

from indexer.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_NONE = {"", "none", "null", "auto"}  # spellings of "not set" for an optional number or list


def option(default: Any = MISSING, description: str = "", *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, choices: tuple[str, ...] | None = None, secret: bool = False,
           env: str | tuple[str, ...] | None = None) -> Any:
    """One declared option: a dataclass field whose metadata carries what :class:`Options` needs.

    :param default: its value when neither the caller nor the environment gives one (a list default: a tuple).
    :param description: one line, shown by ``indexer plugins --options``.
    :param ge, gt, le: bounds for a number (``>=``, ``>``, ``<=``).
    :param choices: the values a string may take.
    :param secret: a credential or a private endpoint: never in a card, a log line, an error message or a repr.
    :param env: environment variable(s) read, in order, when the caller gives no value.
    """
    envs = (env,) if isinstance(env, str) else tuple(env or ())
    meta = {"description": description, "ge": ge, "gt": gt, "le": le, "choices": choices, "secret": secret,
            "env": envs}
    return dataclasses.field(default=default, repr=not secret, metadata={"indexer": meta})


@dataclass(frozen=True)
class Options:
    """The base of every component's option declaration (a frozen dataclass of :func:`option` fields).

    Read like a mapping too (``options.get("fts")``, ``options["fts"]``), for code that predates declarations.
    """

    #: A hint added to the message for an option this component does not take (what to use instead).
    hint: ClassVar[str] = ""
    #: When set, a field without ``env=`` reads the variable ``env_prefix + NAME.upper()``.
    env_prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        # Bounds hold however the value got here: parsed, or given to the constructor by code.
        for f in dataclasses.fields(self):
            try:
                _check_bounds(getattr(self, f.name), _meta(f))
            except _Invalid as exc:
                shown = "a value" if _meta(f)["secret"] else repr(getattr(self, f.name))
                raise ConfigError(f"{type(self).__name__} {f.name} must be {exc} (got {shown})") from None

    # -- reading -------------------------------------------------------------------------------------------------

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self.names() else default

    def __getitem__(self, name: str) -> Any:
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    def as_dict(self, *, public: bool = False) -> dict[str, Any]:
        """Every option's value; ``public=True`` leaves out the secret ones."""
        hidden = self.secret_names() if public else set()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in hidden}

    # -- the declaration -----------------------------------------------------------------------------------------

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def secret_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if _meta(f)["secret"]}

    @classmethod
    def env_names(cls, name: str) -> tuple[str, ...]:
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        return _meta(f)["env"] or ((cls.env_prefix + name.upper(),) if cls.env_prefix else ())

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per option: name, type, default, bounds, secret, env, description (``indexer plugins --options``)."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            meta = _meta(f)
            default = f.default if f.default is not MISSING else None
            rows.append({
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "default": list(default) if isinstance(default, tuple) else default,
                "bounds": _bounds(meta),
                "secret": meta["secret"],
                "env": list(cls.env_names(f.name)),
                "description": meta["description"],
            })
        return rows

    # -- parsing -------------------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None = None, *, owner: str,
              environ: Mapping[str, str] | None = None) -> "Options":
        """The declared options from ``raw`` (``--option``, TOML or API values), then the environment, then the
        defaults. Raises :class:`ConfigError` naming ``owner`` (``"tei embedder"``, ``"lancedb"``), the option, the
        reason and the known options."""
        raw = dict(raw or {})
        environ = os.environ if environ is None else environ
        known = cls.names()
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(_unknown_message(cls, owner, unknown))
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            meta = _meta(f)
            if f.name in raw:
                where, value = f"{owner} option {f.name}", raw[f.name]
            else:
                var = next((v for v in cls.env_names(f.name) if environ.get(v) not in (None, "")), None)
                if var is None:
                    continue
                where, value = var, environ[var]
            try:
                values[f.name] = _check_bounds(_convert(value, hints[f.name]), meta)
            except _Invalid as exc:
                shown = "a value" if meta["secret"] else repr(value)
                if isinstance(exc, _WrongType):
                    message = f"{where}={shown} is not a valid {exc}: give {exc.what}"
                else:
                    message = f"{where} must be {exc} (got {shown})"
                if where.startswith(owner):
                    message += f"; known {owner} options: {', '.join(known)}"
                raise ConfigError(message) from None
        return cls(**values)


@dataclass(frozen=True)
class NoOptions(Options):
    """A component that takes no ``--option`` settings."""


def _meta(f: dataclasses.Field) -> dict[str, Any]:
    return f.metadata.get("indexer") or {"description": "", "ge": None, "gt": None, "le": None, "choices": None,
                                         "secret": False, "env": ()}


def _unknown_message(cls: type[Options], owner: str, unknown: list[str]) -> str:
    known = cls.names()
    if known:
        message = f"unknown {owner} option(s) {', '.join(unknown)}; known: {', '.join(known)}"
    else:
        message = f"the {owner} has no options, so it takes no --option settings (got {', '.join(unknown)})"
    return message + (f"; {cls.hint}" if cls.hint else "")


class _Invalid(ValueError):
    """What a value should have been ("at least 1"); the caller adds where it came from."""


class _WrongType(_Invalid):
    """A value that is not of the declared type: ``str(exc)`` is the type's name, ``what`` says what it takes."""

    def __init__(self, type_name: str, what: str):
        super().__init__(type_name)
        self.what = what


def _convert(value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE and inner[0] is not str):
            return None
        return _convert(value, inner[0])
    if typing.get_origin(hint) in (tuple, list):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise _WrongType("list", "strings, comma-separated")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _WrongType("bool", "true or false")
    if hint is int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise _WrongType("int", "a whole number")
        try:
            return int(str(int(value) if isinstance(value, float) else value).strip().replace("_", "").replace(",", ""))
        except ValueError:
            raise _WrongType("int", "a whole number") from None
    if hint is float:
        if isinstance(value, bool):
            raise _WrongType("float", "a number")
        try:
            return float(str(value).strip().replace("_", "").replace(",", ""))
        except ValueError:
            raise _WrongType("float", "a number") from None
    if hint is str:
        if isinstance(value, (dict, list, tuple)):
            raise _WrongType("str", "a string")
        return str(value)
    raise TypeError(f"an option of type {hint} cannot be declared; use bool, int, float, str, tuple[str, ...] or "
                    "one of them | None")


def _check_bounds(value: Any, meta: dict[str, Any]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if meta["gt"] is not None and not value > meta["gt"]:
        raise _Invalid("a positive number" if meta["gt"] == 0 else f"more than {meta['gt']}")
    if meta["ge"] is not None and not value >= meta["ge"]:
        raise _Invalid(f"at least {meta['ge']}")
    if meta["le"] is not None and not value <= meta["le"]:
        raise _Invalid(f"at most {meta['le']}")
    if meta["choices"] and value not in meta["choices"]:
        raise _Invalid(f"one of {', '.join(meta['choices'])}")
    return value


def _bounds(meta: dict[str, Any]) -> str:
    parts = [f"{op} {meta[key]}" for key, op in (("gt", ">"), ("ge", ">="), ("le", "<=")) if meta[key] is not None]
    if meta["choices"]:
        parts.append("one of " + ", ".join(meta["choices"]))
    return ", ".join(parts)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    if typing.get_origin(hint) in (tuple, list):
        return "list of str"
    return getattr(hint, "__name__", str(hint))


def option_owner(kind: str, name: str) -> str:
    """How messages name a component: a sink by its name (``--option lancedb.fts``), the rest by name and kind
    (``tei embedder``, since ``--option embedder.url`` addresses the build's one embedder)."""
    return name if kind == "sink" else f"{name} {kind.replace('_', ' ')}"


def check_build_options(options: Mapping[str, Mapping[str, Any]], components: Mapping[str, tuple[str, str, type]],
                        *, elsewhere: Iterable[str] = ()) -> None:
    """Parse every ``--option`` table of a build before any component is made, so a bad one fails before any work.

    ``components`` maps each table name a build reads (``source``, ``chunker``, ``embedder``, ``executor`` and the
    name of each sink) to ``(kind, registered name, class)``. Tables named in ``elsewhere`` (sinks this build does
    not write to) are let through unread; a table for anything else is an error that names the tables there are.
    """
    unknown = sorted(set(options) - set(components) - set(elsewhere))
    if unknown:
        raise ConfigError(f"--option {unknown[0]}.NAME: no component of this build is called {unknown[0]!r}; options "
                          f"go to {', '.join(components)}")
    for table, values in options.items():
        if table in components:
            kind, name, cls = components[table]
            getattr(cls, "Options", NoOptions).parse(values, owner=option_owner(kind, name))
