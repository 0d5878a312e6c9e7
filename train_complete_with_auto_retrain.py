#!/usr/bin/env python3
"""The original entry point: every flag of the original tool works verbatim.

    python train_complete_with_auto_retrain.py --quick-test --automated
    python train_complete_with_auto_retrain.py --pairs BTC/USDT ETH/USDT SOL/USDT --data-dir DIR

A thin wrapper over ``nexlify train`` (see ``nexlify train --help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from nexlify.cli import run
except ModuleNotFoundError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from nexlify.cli import run

if __name__ == "__main__":
    run(["train", *sys.argv[1:]])
