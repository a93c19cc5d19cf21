#!/usr/bin/env bash
# Prints the pip constraint arguments that scripts/setup*.sh install with: `-c LOCK` when VENV's Python is the
# one the lock was resolved for (its `# python:` line, see scripts/lock.sh), else — with a warning, since
# newer releases than the tested ones may come in — `-c` each hand-written FALLBACK (pyproject's ranges and the
# torch pin still hold).
#   usage: scripts/constraints.sh VENV LOCK FALLBACK...
set -euo pipefail
venv=$1 lock=$2
shift 2
locked=$(sed -n 's/^# python: //p' "$lock")
python=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$python" = "$locked" ]; then
    echo "-c $lock"
else
    echo "warning: $lock was resolved for Python $locked, $venv has $python: installing the newest releases" \
        "within pyproject.toml's ranges, untested together (set PYTHON=python$locked for the lock)" >&2
    printf -- '-c %s ' "$@"
    echo
fi
