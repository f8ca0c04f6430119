#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh
.venv/bin/ruff format --check --quiet . || { echo "ruff format: run .venv/bin/ruff format ."; exit 1; }
.venv/bin/ruff check --quiet .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
