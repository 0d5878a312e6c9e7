"""Wall time and results of the whole pipeline, as a user runs it.

    .venv/bin/python benchmarks/bench_pipeline.py                 # default pipeline, real candles
    .venv/bin/python benchmarks/bench_pipeline.py --quick-test    # the README's quick test

Runs ``train_complete_with_auto_retrain.py`` in a subprocess (real start-up costs included) on
``../shared/data/market/binance`` (BTC, ETH, SOL; synthetic when absent or with --synthetic),
then reads the summary and writes wall time, initial and final scores, stop reason and the
baselines' scores on the same validation window to ``benchmarks/results/pipeline*.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "market" / "binance"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick-test", action="store_true", help="time the quick test instead")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic market")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/pipeline*.json)")
    parser.add_argument("extra", nargs="*", help="more flags for the training command")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "run"
        cmd = [sys.executable, str(ROOT / "train_complete_with_auto_retrain.py"), "--automated",
               "--output-dir", str(out_dir)]  # fmt: skip
        if args.quick_test:
            cmd.append("--quick-test")
        elif not args.synthetic and SHARED.is_dir():
            cmd += ["--data-dir", str(SHARED), "--pairs", "BTC/USDT", "ETH/USDT", "SOL/USDT"]
        cmd += args.extra
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        summary = json.loads((out_dir / "complete_training_summary.json").read_text())

    result: dict[str, Any] = {
        "command": " ".join(cmd[1:]),
        "wall_seconds": round(wall, 1),
        "data_source": summary["data_source"],
        "data": {k: summary["data"][k] for k in ("pairs", "timeframe", "start", "end", "bars")},
        "validation_window": summary["validation_window"],
        "initial_runs": [
            {k: r[k] for k in ("run_id", "seed", "val_score", "train_return", "val_metrics")}
            for r in summary["initial_runs"]
        ],
        "retraining_iterations": [
            {k: it[k] for k in ("iteration", "score", "improvement_pct", "new_best", "metrics")}
            for it in summary["retraining_iterations"]
        ],
        "best_initial_score": summary["best_initial_score"],
        "final_best_score": summary["final_best_score"],
        "total_improvement_pct": summary["total_improvement_pct"],
        "stop_reason": summary["stop_reason"],
        "timings": summary["timings"],
        "baselines": summary["baselines"],
    }
    name = "pipeline_quick_test.json" if args.quick_test else "pipeline_default.json"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"wall time {wall:.0f}s, best initial {result['best_initial_score']:.3f}, "
        f"final {result['final_best_score']:.3f} ({result['stop_reason']}); wrote {out}"
    )


if __name__ == "__main__":
    main()
