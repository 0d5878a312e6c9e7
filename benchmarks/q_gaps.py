"""How far apart are a study model's Q-values, beside what a trade costs in the same units?

    .venv/bin/python benchmarks/q_gaps.py benchmarks/results/study/timeframe_4h \\
        benchmarks/results/study/timeframe_4h_reward_2000_seeds/seed_42 [--years 2021 2024]

For each study folder (its ``config.yaml`` and the local ``runs/<year>/final_model.pt`` the
study wrote) and test year, replays the year's final model greedily over its untouched test
year on the study's venue, as the study traded it, and records at every decision the gap
between the best action's Q-value and hold's. A trade pays its fee and slippage in the reward,
so a gap smaller than one round trip's cost (``reward_scale x max_position x 2 x (fee +
slippage)`` in Q units) is a conviction the model cannot pay for once it is wrong; the share of
decisions acting on such gaps is what ``--hold-margin`` removes. Needs the shared candles
(``--data-dir``, default ``../shared/data/history/binance``; skipped with a message when
absent). Writes ``benchmarks/results/q_gaps.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.evaluation.backtest import backtest, load_model_for_backtest
from nexlify.io import atomic_write_json
from nexlify.market.obs_layout import PAIR_STATE, spot_action_count, spot_order
from nexlify.pipeline.study import StudySpec, prepare_markets
from nexlify.run_layout import FINAL_MODEL
from nexlify.train.config import load_run_config, run_config_from_dict

OUT = Path(__file__).parent / "results" / "q_gaps.json"


class Recording:
    """A policy that acts as ``inner`` and keeps, for every decision, the Q-values and whether
    the action changes anything (a buy of a pair not held, a sell of one held)."""

    def __init__(self, inner: Any, n_pairs: int, n_spot_actions: int, state_at: int) -> None:
        self.inner, self.n_pairs, self.state_at = inner, n_pairs, state_at
        self.n_spot_actions = n_spot_actions
        self.q: list[np.ndarray] = []
        self.effective: list[np.ndarray] = []

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray:
        self.q.append(np.asarray(self.inner.q_values(obs_ND), dtype=np.float64))
        actions = np.asarray(self.inner.greedy(obs_ND))
        held_NP = obs_ND[:, self.state_at : self.state_at + PAIR_STATE * self.n_pairs : PAIR_STATE]
        orders = [spot_order(int(a), self.n_spot_actions) for a in actions]
        self.effective.append(np.array([
            order is not None and order[1] != bool(held_NP[i, order[0]] > 0.5)
            for i, order in enumerate(orders)
        ], dtype=bool))  # fmt: skip
        return actions


def gap_stats(q_TA: np.ndarray, acting: np.ndarray, cost: float) -> dict[str, Any]:
    gap = q_TA.max(axis=1) - q_TA[:, 0]
    return {
        "decisions": len(gap),
        "gap_quantiles": {f"p{p}": round(float(np.percentile(gap, p)), 5) for p in (50, 90, 99)},
        "round_trip_cost_q": round(cost, 5),
        "share_acting": round(float(acting.mean()), 4),  # orders that change a position
        "share_acting_below_cost": round(float((acting & (gap < cost)).mean()), 4),
        "q_hold_spread": round(float(q_TA[:, 0].std()), 5),
    }


def one(folder: Path, data_dir: str, year: int) -> dict[str, Any] | None:
    model = folder / "runs" / str(year) / FINAL_MODEL
    if not model.is_file():
        print(f"{model}: missing (run folders stay local to the machine that ran the study)")
        return None
    config = run_config_from_dict({"data": {"data_dir": data_dir}},
                                  load_run_config(folder / "config.yaml"))  # fmt: skip
    (markets,) = prepare_markets(config, StudySpec(data_dir=data_dir, years=(year,)))
    (data,) = markets.tests.values()
    policy, spec = load_model_for_backtest(model)
    n_pairs = len(spec.pairs)
    state_at = spec.market.env.obs_window * n_pairs * len(spec.feature_names)
    recorder = Recording(policy, n_pairs, spot_action_count(spec.market, n_pairs), state_at)
    result = backtest(recorder, spec, data)
    q_TA, acting = np.concatenate(recorder.q), np.concatenate(recorder.effective)
    m, x = spec.market, spec.market.execution
    scale = float(policy.config.reward_scale)
    cost = scale * m.risk.max_position * 2 * (x.fee_rate + x.slippage_bps / 10_000)
    stats = gap_stats(q_TA, acting, cost)
    stats["trades"] = int(result.model.metrics[0].n_trades)
    stats["return_pct"] = round(float(result.model.metrics[0].total_return_pct), 3)
    stats["reward_scale"] = scale
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--data-dir", default="../shared/data/history/binance")
    parser.add_argument("--years", nargs="+", type=int, default=[2021, 2022, 2023, 2024])
    args = parser.parse_args()
    if not Path(args.data_dir).is_dir():
        print(f"skipped: {args.data_dir} is absent (the shared candles)")
        return 0
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for folder in args.folders:
        for year in args.years:
            stats = one(folder, args.data_dir, year)
            if stats is not None:
                results.setdefault(str(folder), {})[str(year)] = stats
                print(folder, year, json.dumps(stats))
                atomic_write_json(OUT, results)  # a cut run keeps the years before
    return 0


if __name__ == "__main__":
    sys.exit(main())
