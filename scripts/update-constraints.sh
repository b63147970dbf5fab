#!/usr/bin/env bash
# Refresh constraints.txt from the newest releases pyproject.toml allows: installs them into ./.venv-latest
# (DIFFSCI_LATEST=1 bash scripts/setup.sh) and writes their exact versions, keeping the header and every
# "name==version" line listed in constraints-hold.txt (versions held back on purpose, with the reason).
# Then run `bash scripts/test.sh` (which reinstalls ./.venv at the new pins) and commit if it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
DIFFSCI_LATEST=1 bash scripts/setup.sh
header=$(grep '^#' constraints.txt)
frozen=$(.venv-latest/bin/python -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -iv '^diffsci' | sed -E 's/^(torch==[^+]*)\+.*/\1/')
held=$(grep -v '^#' constraints-hold.txt | grep '==' || true)
{
    echo "$header"
    for line in $frozen; do
        name=${line%%==*}
        hold=$(grep -i "^$name==" <<< "$held" || true)
        echo "${hold:-$line}"
    done
} > constraints.txt
echo "constraints.txt updated; now run: bash scripts/test.sh" >&2
