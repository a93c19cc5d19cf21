"""The locks that setup installs through agree with pyproject.toml's ranges and the hand-written constraints.

Each setup script (``scripts/setup.sh``, ``scripts/setup-colbert.sh``) is read for what it installs: the lock and
fallback constraint files it hands ``scripts/constraints.sh`` and the ``-e "path[extras]"`` projects. For each, every
direct dependency of those projects and extras (markers evaluated for the lock's Python on Linux) must be pinned in
the lock, each pin must satisfy the range that pyproject.toml declares, and the hand-written constraints
(``.ci/constraints*.txt``: the torch pin, the ColBERT stack) must hold too. Locks are written by ``scripts/lock.sh``.
Run in an environment a setup script made, the tests also check it holds the locked versions.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ["scripts/setup.sh", "scripts/setup-colbert.sh"]


def read_setup(script: str) -> tuple[str, list[str], list[tuple[str, list[str]]]]:
    """(lock, fallback constraint files, [(project folder, extras)]) that a setup script installs with."""
    _, lock, fallbacks, projects = read_setup_with_venv(script)
    return lock, fallbacks, projects


def read_setup_with_venv(script: str) -> tuple[str, str, list[str], list[tuple[str, list[str]]]]:
    """(the environment it installs into, lock, fallback constraint files, [(project folder, extras)])."""
    text = (ROOT / script).read_text().replace("\\\n", " ")
    call = re.search(r"scripts/constraints\.sh\s+(?P<venv>\S+)\s+(?P<lock>\S+)(?P<fallbacks>(?:[ \t]+\.ci/[^\s)]+)*)", text)
    assert call, f"{script} does not install through scripts/constraints.sh and a lock"
    projects = [(path or ".", [e.strip() for e in extras.split(",") if e.strip()])
                for path, extras in re.findall(r'-e\s+"([^"\[]*)\[([^\]]*)\]"', text)]
    assert projects, f"{script} installs no -e \"path[extras]\" project"
    return call["venv"], call["lock"], call["fallbacks"].split(), projects


def read_lock(path: Path) -> tuple[str, dict[str, str]]:
    """(the Python it was resolved for, name → exact version)."""
    python, pins = "", {}
    for line in path.read_text().splitlines():
        if line.startswith("# python:"):
            python = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[\w.!+-]+", version), f"{path.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    return python, pins


def requirements(projects: list[tuple[str, list[str]]]) -> list[tuple[str, Requirement]]:
    """(where it is declared, requirement) for the dependencies and the given extras of each project."""
    found = []
    for folder, extras in projects:
        where = f"{folder.rstrip('/')}/pyproject.toml".removeprefix("./")
        project = tomllib.loads((ROOT / where).read_text())["project"]
        declared = [("dependencies", project.get("dependencies", []))]
        declared += [(f"[{extra}]", project["optional-dependencies"][extra]) for extra in extras]
        found += [(f"{where} {part}", Requirement(line)) for part, lines in declared for line in lines]
    return found


def constraint_lines(files: list[str]) -> list[tuple[str, Requirement]]:
    return [(name, Requirement(line.strip())) for name in files for line in (ROOT / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def check_lock(python: str, pins: dict[str, str], wanted: list[tuple[str, Requirement]],
               own: set[str]) -> list[str]:
    """What is wrong with a lock: a wanted requirement unpinned or pinned outside its range. ``own`` names the
    projects the setup installs itself (editable), which the lock leaves out."""
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64", "extra": ""}
    problems = []
    for where, req in wanted:
        name = canonicalize_name(req.name)
        if name in own or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        if name not in pins:
            problems.append(f"{req} ({where}) is not pinned")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"{name}=={pins[name]} is outside {req} ({where})")
    return problems


def own_projects(projects: list[tuple[str, list[str]]]) -> set[str]:
    return {canonicalize_name(tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]["name"])
            for folder, _ in projects}


@pytest.mark.parametrize("script", SETUPS)
def test_the_lock_pins_every_direct_dependency_within_its_range(script):
    lock, fallbacks, projects = read_setup(script)
    python, pins = read_lock(ROOT / lock)
    assert re.fullmatch(r"3\.\d+", python), f"{lock} says no '# python: 3.X' it was resolved for"
    wanted = requirements(projects) + constraint_lines(fallbacks)
    problems = check_lock(python, pins, wanted, own_projects(projects))
    assert not problems, f"{lock} disagrees with pyproject.toml or {fallbacks} (refresh it with scripts/lock.sh): " \
        + "; ".join(problems)
    assert not own_projects(projects) & set(pins), f"{lock} pins a project that setup installs from this checkout"


@pytest.mark.parametrize("script", SETUPS)
def test_fallbacks_keep_the_torch_pin(script):
    """A Python the lock was not resolved for still gets the CPU torch (see .ci/constraints.txt)."""
    _, fallbacks, _ = read_setup(script)
    assert ".ci/constraints.txt" in fallbacks
    assert any(req.name == "torch" and str(req.specifier).startswith("==") for _, req in constraint_lines(fallbacks))


def test_the_check_fails_on_a_lock_that_disagrees():
    wanted = [("pyproject.toml dependencies", Requirement("numpy>=1.26")),
              ("pyproject.toml [test]", Requirement("pytest>=8")),
              ("pyproject.toml dependencies", Requirement("tomli>=2; python_version < '3.11'")),
              ("plugins/x/pyproject.toml dependencies", Requirement("indexer")),
              (".ci/constraints.txt", Requirement("torch==2.13.0"))]
    good = {"numpy": "2.1.0", "pytest": "8.3.0", "torch": "2.13.0"}
    assert check_lock("3.11", good, wanted, {"indexer"}) == []
    assert check_lock("3.11", {**good, "numpy": "1.25.2"}, wanted, {"indexer"}) == [
        "numpy==1.25.2 is outside numpy>=1.26 (pyproject.toml dependencies)"]
    assert check_lock("3.11", {**good, "torch": "2.14.0"}, wanted, {"indexer"}) == [
        "torch==2.14.0 is outside torch==2.13.0 (.ci/constraints.txt)"]
    assert check_lock("3.10", good, wanted, {"indexer"}) == [
        "tomli>=2; python_version < \"3.11\" (pyproject.toml dependencies) is not pinned"]
    missing = dict(good)
    del missing["pytest"]
    assert check_lock("3.11", missing, wanted, {"indexer"}) == ["pytest>=8 (pyproject.toml [test]) is not pinned"]


def test_this_environment_is_installed_from_its_lock():
    """The setup script that made this environment (.venv, .venv-colbert) installed it through its lock: every
    locked package present here has the locked version (packages the lock does not name, installed by hand, are
    not looked at)."""
    made_by = {read_setup_with_venv(script)[0]: script for script in SETUPS}
    script = made_by.get(Path(sys.prefix).name)
    if script is None:
        pytest.skip(f"runs in an environment that a setup script makes ({sorted(made_by)}), not in {sys.prefix}")
    lock, _, _ = read_setup(script)
    python, pins = read_lock(ROOT / lock)
    if python != "%d.%d" % sys.version_info[:2]:
        pytest.skip(f"{lock} is for Python {python}; setup installed this one without it")
    # Only what is installed in the environment: an imported setuptools puts its vendored copies on sys.path.
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {canonicalize_name(d.metadata["Name"]): d.version.split("+")[0] for d in distributions(path=site)}
    drift = {name: (installed[name], pins[name]) for name in pins if name in installed and installed[name] != pins[name]}
    assert not drift, f"installed vs locked ({lock}) {drift}: run bash {script}"
