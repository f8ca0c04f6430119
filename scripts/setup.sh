#!/usr/bin/env bash
# Creates .venv and installs vitsae with its dev extra; a second run with unchanged inputs does nothing.
# On a machine without a GPU, constraints.txt keeps the CPU build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.vitsae-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
    echo "$want" > "$stamp"
fi
