"""The plugin host: loads plugins from the ``indexer`` entry-point group and builds component registries.

Environment switches:

* ``INDEXER_PLUGINS=name,name`` loads only the named entry points (``INDEXER_PLUGINS=`` with an empty value
  loads none, which the core's own tests use). Names are entry-point names, as ``indexer plugins`` lists them.
* ``INDEXER_DISABLE_PLUGINS=name,name`` loads all but the named ones.
* ``INDEXER_TRACE_PLUGINS=1`` prints every hook call, its arguments and results to stderr.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from indexer import hookspecs
from indexer.errors import ConfigError
from indexer.log import get_logger

# Component kind → the register hook that fills it.
COMPONENT_HOOKS = {
    "source": "register_sources",
    "chunker": "register_chunkers",
    "embedder": "register_embedders",
    "sink": "register_sinks",
    "executor": "register_executors",
    "feedback_store": "register_feedback_stores",
}


@dataclass
class Registration:
    name: str
    cls: type
    plugin: str
    trylast: bool = False


@dataclass
class Registry:
    """Name → component class, for one kind of component."""

    kind: str
    entries: dict[str, Registration] = field(default_factory=dict)

    def add(self, reg: Registration) -> None:
        old = self.entries.get(reg.name)
        if old is None or old.trylast and not reg.trylast:
            self.entries[reg.name] = reg
        elif reg.trylast and not old.trylast:
            return
        else:
            raise ConfigError(
                f"{self.kind} {reg.name!r} is registered by both plugin {old.plugin!r} and plugin {reg.plugin!r}; "
                f"disable one with INDEXER_DISABLE_PLUGINS={reg.plugin}"
            )

    def get(self, name: str) -> type:
        try:
            return self.entries[name].cls
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none (are the plugins installed?)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries


class Host:
    """A plugin manager plus the registries built from it."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.registries: dict[str, Registry] = {kind: Registry(kind) for kind in COMPONENT_HOOKS}
        for kind, hook_name in COMPONENT_HOOKS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

                def register(name: str, cls: type, _kind=kind, _plugin=plugin_name, _trylast=impl.trylast):
                    self.registries[_kind].add(Registration(name, cls, _plugin, _trylast))

                # Called one implementation at a time (not through the hook) so each registration knows its
                # plugin; the trace switch still shows the calls.
                if os.environ.get("INDEXER_TRACE_PLUGINS"):
                    print(f"  {hook_name} [{plugin_name}]", file=sys.stderr)
                impl.function(**{k: v for k, v in {"register": register}.items() if k in impl.argnames})

    @property
    def hook(self):
        return self.pm.hook

    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def component(self, kind: str, name: str) -> type:
        return self.registries[kind].get(name)

    def public_options(self, kind: str, name: str, options: dict[str, Any],
                       keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """``options`` recorded for component ``kind``/``name``, without those its declaration marks secret (for a
        card, ``indexer info``, a log line). A component not installed here cannot say which of its options are
        secret, so then only the names in ``keep`` (the build's own settings) are kept."""
        try:
            declared = self.component(kind, name).Options
        except ConfigError:
            return {k: v for k, v in sorted(options.items()) if k in keep}
        return {k: v for k, v in sorted(options.items()) if k not in declared.secret_names()}

    def describe_options(self) -> list[dict[str, Any]]:
        """Every registered component's declared options (``indexer plugins --options``): kind, name, plugin, the
        rows of :meth:`indexer.options.Options.describe`, and the settings it reads from the environment."""
        from indexer.options import NoOptions

        out = []
        for kind, reg in self.registries.items():
            for r in sorted(reg.entries.values(), key=lambda r: r.name):
                environment = getattr(r.cls, "environment", None)
                out.append({"kind": kind, "name": r.name, "plugin": r.plugin,
                            "options": getattr(r.cls, "Options", NoOptions).describe(),
                            "environment": environment.describe() if environment else []})
        return out

    def describe(self) -> list[dict[str, Any]]:
        """Every loaded plugin with its hooks and the components it registers."""
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda x: x[0] or ""):
            if plugin is hookspecs:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            components: dict[str, list[str]] = {}
            about: dict[str, str] = {}
            for kind, reg in self.registries.items():
                for r in sorted(reg.entries.values(), key=lambda r: r.name):
                    if r.plugin == name:
                        components.setdefault(kind, []).append(r.name)
                        about[f"{kind}:{r.name}"] = _about(r.cls)
            out.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", repr(plugin)),
                    "distribution": _DISTS.get(name),
                    "hooks": hooks,
                    "components": components,
                    "about": about,
                }
            )
        return out


def _about(cls: type) -> str:
    """A component's one-line description: its ``description`` attribute, else its docstring's first line."""
    text = getattr(cls, "description", "") or (cls.__doc__ or "").strip()
    return text.splitlines()[0] if text else ""


def _split_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


_DISTS: dict[str, str] = {}  # entry-point name → "distribution version"


def make_plugin_manager(extra_plugins: list[Any] | None = None) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("indexer")
    pm.add_hookspecs(hookspecs)
    only = _split_env("INDEXER_PLUGINS")
    disabled = _split_env("INDEXER_DISABLE_PLUGINS") or set()
    for ep in entry_points(group="indexer"):
        if (only is not None and ep.name not in only) or ep.name in disabled:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except ImportError as exc:  # a broken plugin should not take the whole tool down
            get_logger("plugins").warning(f"indexer: plugin {ep.name!r} failed to import and was skipped: {exc}")
            continue
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            _DISTS[ep.name] = f"{ep.dist.name} {ep.dist.version}"
    for plugin in extra_plugins or []:
        pm.register(plugin)
    pm.check_pending()
    if os.environ.get("INDEXER_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


_host: Host | None = None


def get_host() -> Host:
    """The process-wide host, built on first use."""
    global _host
    if _host is None:
        _host = Host(make_plugin_manager())
    return _host


def set_host(host: Host | None) -> None:
    """Replace the process-wide host (tests register fake plugins this way); ``None`` rebuilds it on next use."""
    global _host
    _host = host
