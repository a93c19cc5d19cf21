"""Every hook spec is documented in docs/plugins.md with its exact signature, and the docs name no hook that does
not exist (as datasette's docs test: the docs are parsed, the signatures come from ``inspect.signature``).

docs/plugins.md shows each hook as a heading ``### `name(arguments)` `` under its "## Hooks" section. Anywhere in
the docs (README.md and docs/*.md), a code span that looks like a hook call — a ``register_…(…)`` name, or the
name of a hook — must be a real hook with its real signature.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

from indexer import hookspecs
from indexer.plugins import Host, make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_DOC = ROOT / "docs" / "plugins.md"

HOOKS = {
    name: f"{name}{inspect.signature(fn)}"
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "indexer_spec")
}

HEADING = re.compile(r"^###\s+`?(?P<call>(?P<name>\w+)\((?P<args>[^)]*)\))`?\s*$", re.M)
# A code span holding a call, e.g. `register_sinks(register)` or `run_finished(summary)`.
CALL_SPAN = re.compile(r"`(?P<call>(?P<name>\w+)\((?P<args>[^)`]*)\))`")


def documented_hooks(text: str) -> dict[str, list[str]]:
    """Hook headings of the "## Hooks" section of a plugins page: name → the signatures shown (one, normally)."""
    match = re.search(r"^## Hooks\s*$(?P<body>.*?)(?=^## |\Z)", text, re.M | re.S)
    found: dict[str, list[str]] = {}
    for heading in HEADING.finditer(match["body"] if match else ""):
        found.setdefault(heading["name"], []).append(heading["call"])
    return found


def wrong_hook_mentions(text: str, hooks: dict[str, str]) -> list[str]:
    """Code spans in ``text`` that show a hook with another signature, or a ``register_…`` hook that is none."""
    wrong = []
    for span in CALL_SPAN.finditer(text):
        name, call = span["name"], span["call"]
        if name in hooks and call != hooks[name]:
            wrong.append(f"`{call}` (the hook is `{hooks[name]}`)")
        elif name not in hooks and name.startswith("register_"):
            wrong.append(f"`{call}` (no such hook)")
    return wrong


def docs() -> dict[str, str]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}


def test_hooks_are_found():
    assert {"register_sources", "register_commands", "run_finished"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_documented_with_its_signature(hook):
    shown = documented_hooks(PLUGINS_DOC.read_text(encoding="utf-8")).get(hook)
    assert shown, f"docs/plugins.md has no '### `{HOOKS[hook]}`' heading under '## Hooks': document the hook there"
    assert shown == [HOOKS[hook]], f"docs/plugins.md shows {shown} for the hook {HOOKS[hook]}"


def test_the_plugins_page_documents_no_hook_that_does_not_exist():
    extra = set(documented_hooks(PLUGINS_DOC.read_text(encoding="utf-8"))) - set(HOOKS)
    assert not extra, f"docs/plugins.md documents hooks that indexer/hookspecs.py does not have: {sorted(extra)}"


@pytest.mark.parametrize("doc", sorted(docs()))
def test_docs_show_hooks_with_their_real_signatures(doc):
    assert wrong_hook_mentions(docs()[doc], HOOKS) == [], f"{doc} shows a hook that is not as indexer/hookspecs.py has it"


def test_the_checks_fail_on_wrong_docs():
    """The parsers above catch a changed signature, a missing hook and an invented one."""
    page = "# P\n\n## Hooks\n\n### `register_sinks(register, db)`\n\n### `register_widgets(register)`\n\n## Components\n"
    found = documented_hooks(page)
    assert found == {"register_sinks": ["register_sinks(register, db)"], "register_widgets": ["register_widgets(register)"]}
    assert found["register_sinks"] != [HOOKS["register_sinks"]]
    assert "register_sources" not in found and "register_widgets" not in HOOKS
    # A heading outside the hooks section is not a hook's documentation.
    assert documented_hooks("## Components\n\n### `register_sinks(register)`\n") == {}
    text = "call `register_sinks(cls)` or `register_widgets(register)`; `run_finished(summary)` is fine"
    assert wrong_hook_mentions(text, HOOKS) == [
        "`register_sinks(cls)` (the hook is `register_sinks(register)`)", "`register_widgets(register)` (no such hook)"]


def test_the_example_plugin_registers_its_embedder(monkeypatch):
    """The page's example plugin works as shown: its module registers `random`, whose vectors have its shape."""
    monkeypatch.setenv("INDEXER_PLUGINS", "")
    example = re.search(r"```python\n(# my_indexer_plugin\.py\n.*?)```", PLUGINS_DOC.read_text(encoding="utf-8"), re.S)
    assert example, "docs/plugins.md lost its example plugin (a python block starting '# my_indexer_plugin.py')"
    module = types.ModuleType("my_indexer_plugin")
    exec(compile(example[1], "docs/plugins.md", "exec"), module.__dict__)
    embedder = Host(make_plugin_manager(extra_plugins=[module])).component("embedder", "random")("random-model")
    assert embedder.info.dimension == 64
    assert embedder.embed_batch(["a", "b", "c"]).shape == (3, 64)
