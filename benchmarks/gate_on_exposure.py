"""Does the no-edge gate's deflated Sharpe pass a policy that is only market exposure?

    .venv/bin/python benchmarks/gate_on_exposure.py

For two bull validation windows, runs the quick-test pipeline (`nexlify train --quick-test
--automated`, one pair, in a temporary folder) for a set of candidates, then puts buy-and-hold
and always-long (no skill, all exposure) through the gate's deflated Sharpe test
(``edge.edge_verdict``) as if each were that run's chosen model, with the run's candidates as
the trials, and fits their market line (``edge.market_line``). Windows: the bundled Binance
BTC/USDT to 2024-12-31 (validation 2024-10-03 .. 2024-12-31) and the Binance history of
BTC/USDT from 2019 cut at 2020-12-31 (validation 2020-10-03 .. 2020-12-31, BTC +170%). Needs
the shared candles (skipped with a message when absent). Writes
``benchmarks/results/gate_on_exposure.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from nexlify.cli import main as nexlify
from nexlify.data.candles import read_candles
from nexlify.evaluation.edge import candidate_sharpes, edge_verdict, market_line
from nexlify.io import atomic_write_json
from nexlify.market.baselines import run_baseline
from nexlify.pipeline.data_choice import load_training_market
from nexlify.run_layout import SUMMARY_FILE
from nexlify.train.config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = Path(__file__).parent / "results" / "gate_on_exposure.json"
POLICIES = ("buy_and_hold", "always_long")


def one_window(data_dir: Path, out: Path) -> dict[str, Any]:
    code = nexlify(["train", "--quick-test", "--automated", "--data-dir", str(data_dir),
                    "--pairs", "BTC/USDT", "--workers", "1", "--output-dir", str(out)])  # fmt: skip
    if code != 0:
        raise SystemExit(f"the quick test on {data_dir} failed ({code})")
    summary = json.loads((out / SUMMARY_FILE).read_text())
    config = load_run_config(out / "config.yaml")
    market = load_training_market(config.data, logging.getLogger("gate_on_exposure"))
    _, val = market.split_last_days(config.data.validation_days)
    trials = candidate_sharpes(summary)
    start, end = val.span()
    row: dict[str, Any] = {
        "validation": [start.isoformat(), end.isoformat()],
        "candidates": len(trials),
        "model_gate": summary["edge"]["found"],
    }
    for name in POLICIES:
        run = run_baseline(name, val, config.market, episode_length=0)
        verdict = edge_verdict(val, run, trials)
        line = market_line(val, run, config.market)
        row[name] = {
            "deflated_sharpe_passes": verdict["found"],
            "p": verdict["p"],
            "sharpe": verdict["sharpe"],
            "sharpe_luck_alone": verdict["sharpe_luck_alone"],
            "beta": line["beta"],
            "alpha_ci95_pct": line["alpha_ci95_pct"],
        }
    return row


def main() -> int:
    bundled = SHARED / "market" / "binance"
    history = SHARED / "history" / "binance" / "BTC_USDT-1h.csv"
    if not (bundled.is_dir() and history.is_file()):
        print(f"skipped: {SHARED} is absent (the shared candles)")
        return 0
    results: dict[str, Any] = {"command": "benchmarks/gate_on_exposure.py"}
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "history_2020"
        cut.mkdir()
        frame = read_candles(history)
        frame = frame[(frame.index >= pd.Timestamp("2019-01-01", tz="UTC"))
                      & (frame.index < pd.Timestamp("2021-01-01", tz="UTC"))]  # fmt: skip
        frame.rename_axis("date").reset_index().to_csv(cut / "BTC_USDT-1h.csv", index=False)
        for name, data_dir in (("2024-Q4", bundled), ("2020-Q4", cut)):
            results[name] = one_window(data_dir, Path(tmp) / name)
            print(name, results[name])
    atomic_write_json(OUT, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
