"""The ablation study of issue 4, as a benchmark: runs ``nexlify ablate`` and keeps its table.

    .venv/bin/python benchmarks/bench_ablation.py [--seeds 5] [--episodes 24] [--workers 2]

Trains the full configuration and each component removed in turn, 5 seeds each, on the
synthetic market and on ``../shared/data/market/binance`` (BTC, ETH, SOL; synthetic only when
absent), and copies ``ablation.md`` / ``ablation.json`` to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "market" / "binance"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="5")
    parser.add_argument("--episodes", default="24")
    parser.add_argument("--workers", default="2")
    parser.add_argument("extra", nargs="*", help="more flags for nexlify ablate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ablation"
        cmd = [sys.executable, "-m", "nexlify.cli", "ablate", "--output-dir", str(out),
               "--seeds", args.seeds, "--episodes", args.episodes, "--workers", args.workers,
               "--pairs", "BTC/USDT", "ETH/USDT", "SOL/USDT"]  # fmt: skip
        if SHARED.is_dir():
            cmd += ["--data-dir", str(SHARED)]
        cmd += args.extra
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        results = ROOT / "benchmarks" / "results"
        results.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "ablation.md", results / "ablation.md")
        shutil.copyfile(out / "ablation.json", results / "ablation.json")
    print(f"done in {time.perf_counter() - start:.0f}s; wrote {results / 'ablation.md'}")


if __name__ == "__main__":
    main()
