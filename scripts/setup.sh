#!/usr/bin/env bash
# Creates .venv (if missing) and installs Nexlify into it with the extras in NEXLIFY_EXTRAS (default: dev).
# Idempotent: a stamp file skips the work when pyproject.toml and the extras have not changed.
#
# torch: an already-installed torch is kept. Otherwise NEXLIFY_TORCH (default torch==2.13.0) is installed,
# from NEXLIFY_TORCH_INDEX when set (e.g. PyTorch's CPU or CUDA wheel index), else from pip's configured
# indexes. pyproject.toml accepts any torch>=2.1, so users may bring the build that fits their GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${NEXLIFY_EXTRAS:-dev}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

pip_install() {
    if ! "$VPY" -m pip install --disable-pip-version-check "$@" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2
        echo "[setup] pip install $* failed" >&2
        exit 1
    fi
}

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.nexlify-setup
want="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    TORCH_REQ=${NEXLIFY_TORCH:-torch==2.13.0}
    echo "[setup] installing $TORCH_REQ" >&2
    if [ -n "${NEXLIFY_TORCH_INDEX:-}" ]; then
        pip_install "$TORCH_REQ" --index-url "$NEXLIFY_TORCH_INDEX"
    else
        pip_install "$TORCH_REQ"
    fi
fi
echo "[setup] installing nexlify[$EXTRAS] into .venv" >&2
pip_install -e ".[$EXTRAS]"
"$VPY" -c "import nexlify, torch; print('[setup] nexlify', nexlify.__version__, '| torch', torch.__version__)" >&2
echo "$want" > "$stamp"
