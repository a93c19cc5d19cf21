"""The plugin host: hook specs documented and tested, registries, env switches, entry points, the CLI's start-up."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pluggy
import pytest
from click.testing import CliRunner

from fakes import FakePlugin, HashEmbedder
from indexer import hookspecs
from indexer.errors import ConfigError
from indexer.hookspecs import hookimpl
from indexer.plugins import COMPONENT_HOOKS, Host, make_plugin_manager

TESTS = Path(__file__).resolve().parent
BUILTINS = {"sources", "chunker", "local_embedder", "lancedb", "local_executor", "serve"}

HOOKS = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "indexer_spec")
)


def test_hookspecs_are_found():
    assert set(COMPONENT_HOOKS.values()) < set(HOOKS)
    assert {"register_commands", "run_finished"} < set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert len(doc.strip()) > 40, f"hook {hook} needs a docstring saying when it is called and with what"
    for param in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f":param {param}:" in doc, f"hook {hook} does not document its argument {param}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_tested(hook):
    """A hook counts as tested when a test other than this file implements or calls it."""
    for path in TESTS.glob("*.py"):
        if f"def {hook}(" in path.read_text() or f"hook.{hook}(" in path.read_text():
            return
    pytest.fail(f"hook {hook} is implemented by no test plugin: add a test that exercises it")


@pytest.mark.parametrize("kind", sorted(COMPONENT_HOOKS))
def test_unknown_name_lists_the_known_ones(monkeypatch, kind):
    monkeypatch.setenv("INDEXER_PLUGINS", "")
    host = Host(make_plugin_manager(extra_plugins=[FakePlugin]))
    known = ", ".join(host.registry(kind).names()) or "none"
    with pytest.raises(ConfigError, match=f"unknown {kind} 'zzz'; known {kind}s: {known}"):
        host.component(kind, "zzz")


def test_feedback_store_registered_by_a_plugin(monkeypatch):
    from indexer.components import FeedbackPair

    monkeypatch.setenv("INDEXER_PLUGINS", "")
    store = Host(make_plugin_manager(extra_plugins=[FakePlugin])).component("feedback_store", "list")(db="x")
    pair = FeedbackPair("q", "doc#0")
    assert store.add([pair, pair]) == 1 and list(store.pairs()) == [pair]


def test_a_misspelled_hook_fails_loudly(monkeypatch):
    monkeypatch.setenv("INDEXER_PLUGINS", "")

    class Typo:
        @hookimpl
        def register_sourcess(self, register):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="register_sourcess"):
        make_plugin_manager(extra_plugins=[Typo()])


def test_builtins_come_through_the_entry_point_group(monkeypatch):
    monkeypatch.delenv("INDEXER_PLUGINS", raising=False)
    monkeypatch.delenv("INDEXER_DISABLE_PLUGINS", raising=False)
    host = Host(make_plugin_manager())
    described = {p["name"]: p for p in host.describe()}
    assert BUILTINS <= set(described)
    assert all(described[name]["distribution"].startswith("indexer ") for name in BUILTINS)
    assert described["lancedb"]["about"]["sink:lancedb"].startswith("LanceDB table")
    assert described["chunker"]["about"]["chunker:token"]  # falls back on the docstring
    assert "local" in host.registry("embedder") and "lancedb" in host.registry("sink")
    assert "token" in host.registry("chunker") and "jsonl" in host.registry("source")


def test_only_and_disable_switches(monkeypatch):
    monkeypatch.setenv("INDEXER_PLUGINS", "local_executor")
    assert {p["name"] for p in Host(make_plugin_manager()).describe()} == {"local_executor"}
    monkeypatch.delenv("INDEXER_PLUGINS")
    monkeypatch.setenv("INDEXER_DISABLE_PLUGINS", "lancedb,sources")
    names = {p["name"] for p in Host(make_plugin_manager()).describe()}
    assert "lancedb" not in names and "sources" not in names and "chunker" in names


def test_trace_switch_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("INDEXER_PLUGINS", "")
    monkeypatch.setenv("INDEXER_TRACE_PLUGINS", "1")
    host = Host(make_plugin_manager(extra_plugins=[FakePlugin]))
    host.hook.run_finished(summary="S")
    err = capsys.readouterr().err
    assert "register_embedders" in err and "run_finished" in err


def test_third_party_overrides_a_trylast_builtin(monkeypatch):
    monkeypatch.setenv("INDEXER_PLUGINS", "local_executor")

    class MyExecutor:
        pass

    class Override:
        @hookimpl
        def register_executors(self, register):
            register("local", MyExecutor)

    assert Host(make_plugin_manager(extra_plugins=[Override()])).component("executor", "local") is MyExecutor


def test_two_plugins_claiming_a_name_is_an_error(monkeypatch):
    monkeypatch.setenv("INDEXER_PLUGINS", "")

    class Again:
        @hookimpl
        def register_embedders(self, register):
            register("hash", HashEmbedder)

    with pytest.raises(ConfigError, match="registered by both"):
        Host(make_plugin_manager(extra_plugins=[FakePlugin, Again()]))


def test_register_commands_adds_a_cli_command(monkeypatch):
    from indexer.cli import cli

    class Hello:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    monkeypatch.setenv("INDEXER_PLUGINS", "")
    host = Host(make_plugin_manager(extra_plugins=[Hello()]))
    host.hook.register_commands(cli=cli)
    try:
        result = CliRunner().invoke(cli, ["hello"])
        assert result.output == "hello from a plugin\n"
    finally:
        cli.commands.pop("hello", None)


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "indexer.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_indexer_plugins_command_lists_builtins():
    out = _run("plugins", "--json")
    assert out.returncode == 0, out.stderr
    names = {p["name"] for p in json.loads(out.stdout)}
    assert BUILTINS <= names


def test_help_imports_nothing_heavy():
    """`indexer --help` must stay fast: no torch, transformers, lancedb, datasets, numpy, nor the web stack of
    `indexer serve`, at start-up."""
    code = (
        "import sys; from indexer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'lancedb', 'datasets', 'numpy', 'pyarrow', 'sentence_transformers',"
        " 'fastapi', 'starlette', 'uvicorn')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "Usage:" in out.stdout
