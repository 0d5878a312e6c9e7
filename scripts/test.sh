#!/usr/bin/env bash
# The project's test command: set-up, lint, type-check, tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The HTML report test renders pages in a real headless browser: Debian's chromium.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[test] installing Debian's chromium for the report rendering test" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || echo "[test] could not install chromium: the browser test will be skipped" >&2
fi
.venv/bin/ruff check src tests benchmarks train_complete_with_auto_retrain.py
.venv/bin/ruff format --check src tests benchmarks train_complete_with_auto_retrain.py
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
