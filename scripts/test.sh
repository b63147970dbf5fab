#!/usr/bin/env bash
# The whole test suite: set up ./.venv if needed, then run pytest (extra arguments go to pytest).
# DIFFSCI_LATEST=1 runs it in ./.venv-latest against the newest releases of the dependencies instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=.venv
[ "${DIFFSCI_LATEST:-0}" = 1 ] && venv=.venv-latest
export JAX_PLATFORMS=cpu
exec "$venv/bin/python" -m pytest "$@"
