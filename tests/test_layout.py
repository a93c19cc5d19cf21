"""Layout rules the code base keeps: what one module needs from another is public.

A name that starts with one underscore is private to its module. Any ``from X import _name`` or ``X._name`` where
X is another module of ours (the core ``indexer``, a plugin ``indexer_…``, or a module of the folders walked) is a
seam that should be public API: rename it, or move it into a public module. The walker works on any folder, so the
test also proves it catches a planted case.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tests/ is not walked: a test may reach into a module to patch its internals (a cache, a block size)
WALKED = ("indexer", "plugins", "scripts")


def module_name(path: Path, root: Path) -> str:
    """The dotted name a file imports under: ``plugins/indexer_hub/publish.py`` is ``indexer_hub.publish``
    (``plugins/indexer_colbert/indexer_colbert/x.py`` is ``indexer_colbert.x``); tests and scripts are top level."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "plugins":
        parts = parts[1:]
        if len(parts) > 1 and parts[0] == parts[1]:  # a plugin that is a distribution of its own
            parts = parts[1:]
    elif parts[0] in ("tests", "scripts"):
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(root: Path, folders=WALKED) -> list[str]:
    """Every use in ``folders`` (under ``root``) of another module's private name, as ``file:line: what``."""
    files = [p for folder in folders for p in sorted((root / folder).rglob("*.py"))
             if not any(part.startswith(".") or part in ("build", "__pycache__") for part in p.relative_to(root).parts)]
    ours = {module_name(p, root) for p in files}
    tops = {m.split(".")[0] for m in ours} | {"indexer"}

    def is_ours(module: str) -> bool:
        return module.split(".")[0] in tops or module.split(".")[0].startswith("indexer_")

    found = []
    for path in files:
        here = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        modules: dict[str, str] = {}  # local name → one of our modules it is bound to
        where = f"{path.relative_to(root)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if is_ours(a.name):
                        if a.asname:
                            modules[a.asname] = a.name
                        else:
                            modules.setdefault(a.name.split(".")[0], a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, here, path.name == "__init__.py")
                if not is_ours(source):
                    continue
                for a in node.names:
                    if source != here and is_private(a.name):
                        found.append(f"{where}:{node.lineno}: from {source} import {a.name}")
                    elif f"{source}.{a.name}" in ours:
                        modules[a.asname or a.name] = f"{source}.{a.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                chain, value = [node.attr], node.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in modules:
                    owner = ".".join([modules[value.id], *reversed(chain[1:])])
                    if owner != here:
                        found.append(f"{where}:{node.lineno}: {owner}.{node.attr}")
    return sorted(set(found))


def test_no_module_uses_another_modules_private_names():
    found = private_uses(ROOT)
    assert not found, "private names used across modules (make them public API):\n" + "\n".join(found)


def test_the_walker_finds_planted_private_uses(tmp_path):
    pkg = tmp_path / "plugins" / "indexer_demo"
    pkg.mkdir(parents=True)
    (tmp_path / "indexer").mkdir()
    (tmp_path / "indexer" / "__init__.py").write_text("")
    (tmp_path / "indexer" / "state.py").write_text("def _secret():\n    return 1\n\ndef public():\n    return _secret()\n")
    (pkg / "__init__.py").write_text("from . import helpers\n")
    (pkg / "helpers.py").write_text("def _util():\n    return 2\n")
    (pkg / "uses.py").write_text(
        "import indexer.state\n"
        "from indexer.state import _secret, public\n"
        "from indexer import state as st\n"
        "from .helpers import _util\n"
        "from indexer_demo import helpers\n"
        "x = indexer.state._secret() + st._secret() + helpers._util() + public()\n"
        "from os.path import _get_sep  # not ours: allowed\n"
        "class A:\n"
        "    def _own(self):\n"
        "        return self._own  # an object's own private attribute: allowed\n")
    found = private_uses(tmp_path, ("indexer", "plugins"))
    assert found == sorted([
        "plugins/indexer_demo/uses.py:2: from indexer.state import _secret",
        "plugins/indexer_demo/uses.py:4: from indexer_demo.helpers import _util",
        "plugins/indexer_demo/uses.py:6: indexer.state._secret",
        "plugins/indexer_demo/uses.py:6: indexer_demo.helpers._util",
    ]), found
