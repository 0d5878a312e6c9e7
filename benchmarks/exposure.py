"""How much of a studied configuration's excess over cash is only its exposure to the market?

    .venv/bin/python benchmarks/exposure.py [benchmarks/results/study/<folder> ...] \\
        [--data-dir ../shared/data/history/binance]

A long-only spot policy that holds a rising market part of the time beats cash without any
skill. For each multi-seed study folder (default: every one under ``benchmarks/results/study``
with a ``seeds.json``, except the runs known to be invalid, see ``INVALID``) this regresses the
seed-averaged daily excess over cash (an equal split across the seeds' models, the study's own
judge) on buy-and-hold's daily excess over the same Binance test days: the beta is the market
exposure the models carried on average, the alpha what is left, with a 95% stationary-bootstrap
interval (``nexlify.evaluation.stats.market_exposure``, the same line ``nexlify study`` now
writes into ``study.md`` and ``seeds.md``). Each seed's own beta and alpha, and the rules-on
baselines' (always-long and random under the folder's risk rules, the daily trend rule), are
recorded beside it: a model's alpha means little unless it is above a random policy's (one
draw, seeded as the study's first seed, as ``target_baselines.py`` runs it).

Buy-and-hold's and the baselines' days are recomputed from the candles with the folder's
``config.yaml`` (no training). Buy-and-hold's yearly return is checked against the one the study
recorded and, where the study recorded its days too (``study.json``), every day against them: a
mismatch stops the run.
Needs the shared candles (skipped with a message when absent). KuCoin is left out (one year).
Writes ``benchmarks/results/study/exposure.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.evaluation.stats import market_exposure
from nexlify.io import atomic_write_json
from nexlify.pipeline.study import MARKET_DAILY, StudySpec, prepare_markets
from nexlify.pipeline.study_seeds import SEEDS_FILE, seed_summary
from study_baselines import baseline_years, folder_config

ROOT = Path(__file__).parent / "results" / "study"
OUT = ROOT / "exposure.json"
VENUE = "binance"
INVALID = (
    "timeframe_4h_reward_2000_decision6_seeds",
    "timeframe_4h_reward_2000_decision6_episodes6x_seeds",
)
"""Studies counted as tried but invalid (levers.md rows 46-49: schedules planned in bars)."""
BASELINES = ("always_long", "random", "trend")
"""Baselines whose beta and alpha are set beside the model's (buy-and-hold is the market)."""


def _load_seeds(folder: Path) -> dict[int, dict[str, Any]]:
    found = {
        int(path.parent.name.removeprefix("seed_")): json.loads(path.read_text())
        for path in sorted(folder.glob("seed_*/study.json"))
    }
    if not found:
        raise SystemExit(f"{folder}: no seed_*/study.json (not a multi-seed study folder)")
    return found


def _market_days(
    folder: Path, by_seed: dict[int, dict[str, Any]], data_dir: str
) -> dict[str, dict[str, np.ndarray]]:
    """Per test year: buy-and-hold's daily excess over cash and the baselines', from the
    candles with the folder's config (checked against the study's recorded buy-and-hold)."""
    first = next(iter(by_seed.values()))
    first_seed = json.loads((folder / SEEDS_FILE).read_text())["seeds"][0]  # the random draw's
    config = folder_config(folder / f"seed_{first_seed}/config.yaml", data_dir)
    spec = StudySpec(data_dir=data_dir, venue=VENUE, years=tuple(first["spec"]["years"]))
    out: dict[str, dict[str, np.ndarray]] = {}
    names = ("cash", "buy_and_hold", *BASELINES)
    for found in baseline_years(config, prepare_markets(config, spec), names):
        year = str(found.year)
        recorded = first["years"][year]["venues"][VENUE]["buy_and_hold"]["total_return_pct"]
        made = found.runs["buy_and_hold"].metrics[0].total_return_pct
        if not np.isclose(made, recorded, rtol=1e-6, atol=1e-6):
            raise SystemExit(f"{folder} {year}: buy-and-hold made {made:.4f}% from the candles "
                             f"here, {recorded:.4f}% in the study: other data")  # fmt: skip
        out[year] = {name: found.excess[name] for name in names[1:]}
    return out


def one_folder(folder: Path, data_dir: str) -> dict[str, Any]:
    by_seed = _load_seeds(folder)
    years = [str(y) for y in next(iter(by_seed.values()))["spec"]["years"]]
    days = _market_days(folder, by_seed, data_dir)
    for results, year in itertools.product(by_seed.values(), years):
        cell = results["years"][year]["venues"][VENUE]
        made = days[year]["buy_and_hold"]
        same = (
            np.allclose(cell[MARKET_DAILY], made, rtol=1e-6, atol=1e-9)
            if MARKET_DAILY in cell
            else len(made) == len(cell["model_excess_daily"])
        )
        if not same:
            raise SystemExit(f"{folder} {year}: the candles give other days than the study")
        cell.setdefault(MARKET_DAILY, made.tolist())
    row = seed_summary(by_seed)["venues"][VENUE]["model"]
    market = np.concatenate([by_seed[next(iter(by_seed))]["years"][y]["venues"][VENUE][MARKET_DAILY]
                             for y in years])  # fmt: skip
    per_seed = {}
    for seed, results in by_seed.items():
        model = np.concatenate([results["years"][y]["venues"][VENUE]["model_excess_daily"]
                                for y in years])  # fmt: skip
        per_seed[str(seed)] = _line(market_exposure(model, market))
    baselines = {}
    for name in BASELINES:
        series = np.concatenate([days[y][name] for y in years])
        baselines[name] = {"excess_daily_pct": float(series.mean()) * 100,
                           **_line(market_exposure(series, market))}  # fmt: skip
    averaged = row["seed_averaged"]
    return {
        "seeds": len(by_seed),
        "years": years,
        "seed_averaged": {
            "excess_daily_pct": averaged["excess_daily_pct"],
            "excess_daily_ci95_pct": averaged["excess_daily_ci95_pct"],
            **_line(averaged["market"]),
        },
        "per_seed": per_seed,
        "baselines": baselines,
    }


def _line(found: dict[str, Any]) -> dict[str, Any]:
    return {k: found[k] for k in ("beta", "alpha_daily_pct", "alpha_ci95_pct", "correlation")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--data-dir", default="../shared/data/history/binance")
    args = parser.parse_args()
    if not Path(args.data_dir).is_dir():
        print(f"skipped: {args.data_dir} is absent (the shared candles)")
        return 0
    folders = args.folders or sorted(
        p.parent for p in ROOT.glob("*/seeds.json") if p.parent.name not in INVALID
    )
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for folder in folders:
        found = one_folder(folder, args.data_dir)
        results[folder.name] = found
        atomic_write_json(OUT, results)
        avg = found["seed_averaged"]
        lo, hi = avg["alpha_ci95_pct"]
        text = (f"{folder.name}: {found['seeds']} seeds, excess {avg['excess_daily_pct']:+.4f}"
                f"%/day, beta {avg['beta']:.3f}, alpha {avg['alpha_daily_pct']:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}]")  # fmt: skip
        text += "; " + ", ".join(
            f"{name} beta {b['beta']:.3f} alpha {b['alpha_daily_pct']:+.4f}"
            for name, b in found["baselines"].items()
        )
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
