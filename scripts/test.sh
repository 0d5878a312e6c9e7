#!/usr/bin/env bash
# The project's test command: set-up, lint, type-check, tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks train_complete_with_auto_retrain.py
.venv/bin/ruff format --check src tests benchmarks train_complete_with_auto_retrain.py
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
