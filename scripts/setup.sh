#!/usr/bin/env bash
# Create ./.venv and install diffsci with its test extras into it, at the exact versions of constraints.txt
# (the tested environment). DIFFSCI_LATEST=1 instead creates ./.venv-latest with the newest releases that
# pyproject.toml allows (to see whether a new release of a dependency breaks anything).
# Idempotent: reinstalls only when pyproject.toml, constraints.txt or this script changed since the last install.
# Needs only Python >= 3.11 with pip and venv. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "diffsci needs Python >= 3.11; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 1
}

if [ "${DIFFSCI_LATEST:-0}" = 1 ]; then
    venv=.venv-latest
    # newest releases of everything but torch, which stays the CPU build installed below (an eager upgrade
    # would replace it with a multi-GB CUDA build)
    pins=(--upgrade --upgrade-strategy eager -c "$venv/torch.txt")
else
    venv=.venv
    pins=(-c constraints.txt)
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
echo "torch==2.13.0" > "$venv/torch.txt"

stamp=$venv/.diffsci-installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "diffsci: installing into $venv (log: $venv/install.log)" >&2
    pip_install() { "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >> "$venv/install.log" 2>&1 || {
        tail -n 40 "$venv/install.log" >&2; echo "diffsci: pip install $* failed; full log in $venv/install.log" >&2; exit 1; }; }
    # torch first and exactly: with no torch present, a bare "torch" requirement pulls a multi-GB CUDA build.
    pip_install torch==2.13.0
    pip_install "${pins[@]}" -e '.[test]'
    echo "$want" > "$stamp"
fi
