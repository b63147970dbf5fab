#!/usr/bin/env bash
# The main job: set up ./.venv if needed, then run the diffsci tour on bundled data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# `diffsci tour` is built by a later issue; until it lands this shows the CLI's help.
exec .venv/bin/diffsci --help
