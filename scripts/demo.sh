#!/usr/bin/env bash
# Sets up (idempotent) and runs the main job on the embedded default; extra arguments go to `vitsae demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/vitsae demo "$@"
