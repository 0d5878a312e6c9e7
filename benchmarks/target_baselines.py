"""Would the issue's target pass a baseline? The study's bar applied to each baseline in turn.

    .venv/bin/python benchmarks/target_baselines.py \\
        [benchmarks/results/study/timeframe_4h_reward_2000_seeds/seed_42 ...] \\
        [--data-dir ../shared/data/history/binance] [--kucoin ../shared/data/market/kucoin]

The study says a model holds up when, in at least 3 of the 4 test years on Binance (and in
2024 on KuCoin), its return after fees is > 0 and its Sharpe is above 0 and above every
baseline's, and its excess daily return over cash pooled over the years has a 95% interval
above 0. This applies the same bar to every baseline the study's tables show, judged against
the other baselines (the model left out), on the test years of each study folder's config
(its ``config.yaml``: timeframe, risk rules, fees, decision interval): how high the bar is on
these markets, and what kind of policy clears it. Also records the annualised Sharpe of each
baseline's pooled daily excess (365 days, ``metrics.annualised_sharpe``), to set beside a
study's seed-averaged model.
KuCoin is left out, with the reason, where the config's feature warm-up is longer than its
candles before 2024. Runs no training (the baselines over each test year, seconds).
Needs the shared candles (skipped with a message when absent). Writes
``benchmarks/results/study/target_baselines.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.errors import DataError
from nexlify.io import atomic_write_json
from nexlify.market.baselines import BASELINES
from nexlify.market.metrics import annualised_sharpe
from nexlify.pipeline.study import DEFAULT_YEARS, StudySpec, prepare_markets
from nexlify.pipeline.study_report import beats_everything
from nexlify.pipeline.study_seeds import years_needed
from nexlify.pipeline.study_stats import excess_fields
from study_baselines import baseline_years, folder_config

OUT = Path(__file__).parent / "results" / "study" / "target_baselines.json"
DEFAULT_FOLDER = "benchmarks/results/study/timeframe_4h_reward_2000_seeds/seed_42"


def one_folder(folder: Path, data_dir: str, kucoin: str | None) -> dict[str, Any]:
    config = folder_config(folder / "config.yaml", data_dir)
    venues = {"kucoin": kucoin} if kucoin else {}
    spec = StudySpec(data_dir=data_dir, venue="binance", other_venues=venues)
    try:
        years = prepare_markets(config, spec)
    except DataError as error:  # KuCoin's candles may be too short for the feature warm-up
        if not venues:
            raise
        print(f"{folder}: KuCoin left out: {error}")
        years = prepare_markets(config, replace(spec, other_venues={}))
    per_year: dict[str, dict[str, Any]] = {}
    daily: dict[str, dict[str, list[np.ndarray]]] = {}
    for found in baseline_years(config, years):
        rows = {}
        for name, run in found.runs.items():
            m = run.metrics[0]
            rows[name] = {"total_return_pct": float(m.total_return_pct),
                          "sharpe": float(m.sharpe), "n_trades": int(m.n_trades)}  # fmt: skip
            daily.setdefault(found.venue, {}).setdefault(name, []).append(found.excess[name])
        per_year[f"{found.year} {found.venue}"] = {
            name: {**row, "meets_target": beats_everything(rows, name)}
            for name, row in rows.items()
        }
    summary = {}
    for name in BASELINES:
        binance = [per_year[key][name] for key in per_year if key.endswith("binance")]
        binance_years = sum(row["meets_target"] for row in binance)
        excess = np.concatenate(daily["binance"][name])
        pooled = excess_fields(excess, 0)
        pooled["sharpe_annualised"] = annualised_sharpe(excess, "1d")
        kucoin_row = per_year.get(f"{max(DEFAULT_YEARS)} kucoin", {}).get(name)
        summary[name] = {
            "binance_years_meeting": binance_years,
            "binance_pooled": pooled,
            "kucoin_meets": None if kucoin_row is None else kucoin_row["meets_target"],
            "holds_up": binance_years >= years_needed(len(binance))
            and pooled["excess_daily_ci95_pct"][0] > 0
            and (kucoin_row is None or kucoin_row["meets_target"]),
        }
    return {"timeframe": config.data.timeframe, "risk": vars(config.market.risk),
            "per_year": per_year, "summary": summary}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path(DEFAULT_FOLDER)])
    parser.add_argument("--data-dir", default="../shared/data/history/binance")
    parser.add_argument("--kucoin", default="../shared/data/market/kucoin")
    args = parser.parse_args()
    if not Path(args.data_dir).is_dir():
        print(f"skipped: {args.data_dir} is absent (the shared candles)")
        return 0
    kucoin = args.kucoin if Path(args.kucoin).is_dir() else None
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for folder in args.folders:
        found = one_folder(folder, args.data_dir, kucoin)
        results[str(folder)] = found
        atomic_write_json(OUT, results)
        print(folder)
        for name, s in found["summary"].items():
            lo, hi = s["binance_pooled"]["excess_daily_ci95_pct"]
            print(f"  {name:14s} years meeting {s['binance_years_meeting']} of 4, pooled "
                  f"{s['binance_pooled']['excess_daily_pct']:+.4f} [{lo:+.4f}, {hi:+.4f}] %/day "
                  f"(Sharpe {s['binance_pooled']['sharpe_annualised']:.2f}), "
                  f"KuCoin 2024 {s['kucoin_meets']}, holds up: {s['holds_up']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
