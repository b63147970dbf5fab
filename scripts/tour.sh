#!/usr/bin/env bash
# The main job: set up ./.venv if needed, then run the diffsci tour on bundled data (extra arguments go to
# `diffsci tour`, e.g. --quick, --device cuda, --out DIR, --only bayes,dft).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/diffsci tour "$@"
