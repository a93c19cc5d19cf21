#!/usr/bin/env bash
# Refresh the locks on purpose: resolve the newest releases that pyproject.toml's ranges and the hand-written
# constraints allow, write them, then set up and run the tests from the new locks.
#
#   .ci/lock.txt          .venv: indexer[test]          from pyproject.toml + .ci/constraints.txt (the torch pin)
#   .ci/lock-colbert.txt  .venv-colbert: + the ColBERT plugin, from both pyprojects + .ci/constraints.txt
#                         + .ci/constraints-colbert.txt
#
# Resolution is pip's own (`pip install --dry-run --report` in a throwaway venv): the resolver, indexes and
# find-links that scripts/setup.sh then installs with, so the CPU torch wheel of .ci/constraints.txt is what gets
# resolved. A lock holds for the Python it was resolved on (its `# python:` line); run this with that Python
# (PYTHON=python3.11). Commit the locks only when the tests below pass. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# resolve LOCK PIP-ARGS...: the full set pip would install for PIP-ARGS into an empty environment, as LOCK.
resolve() {
    local lock=$1
    shift
    rm -rf "$TMP/venv"
    "$PY" -m venv "$TMP/venv"
    "$TMP/venv/bin/python" -m pip install -q --upgrade pip
    "$TMP/venv/bin/python" -m pip install -q --dry-run --ignore-installed --report "$TMP/report.json" "$@"
    "$TMP/venv/bin/python" - "$TMP/report.json" "$lock" "$*" <<'PY'
import json
import re
import sys

report, lock, args = sys.argv[1:]
pins = {}
for item in json.load(open(report))["install"]:
    if "dir_info" in item.get("download_info", {}):  # the editable project itself
        continue
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
    # A local label goes: torch 2.13.0+cpu is written torch==2.13.0, which the CPU wheel satisfies.
    pins[name] = item["metadata"]["version"].split("+")[0]
python = "%d.%d" % sys.version_info[:2]
with open(lock, "w") as out:
    out.write(
        "# Written by scripts/lock.sh; refresh it with that script (it runs the tests), never by hand.\n"
        f"# Every package of `pip install {args}`, resolved by pip, exact versions.\n"
        "# scripts/setup*.sh install through it (-c) when their Python is this one:\n"
        f"# python: {python}\n"
    )
    out.writelines(f"{name}=={pins[name]}\n" for name in sorted(pins))
print(f"{lock}: {len(pins)} packages, Python {python}")
PY
}

resolve .ci/lock.txt -c .ci/constraints.txt -e ".[test]"
resolve .ci/lock-colbert.txt -c .ci/constraints.txt -c .ci/constraints-colbert.txt \
    -e ".[test]" -e "plugins/indexer_colbert[modal]"

bash scripts/test.sh "$@"
bash scripts/test-colbert.sh
