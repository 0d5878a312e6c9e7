"""The final model by a lower confidence bound (``pipeline.selection lcb``).

Out of sample the best validation score is mostly luck: seeds of one configuration differ as
much as configurations do. This rule runs every saved candidate once, greedily, over the newest
validation window and keeps the one whose mean daily excess return over cash has the highest
lower bound of its 95% stationary-bootstrap interval, so a steady small edge beats a large but
erratic one. The daily returns are those the no-edge gate judges the final model by
(:func:`nexlify.evaluation.edge.run_edge_gate`), and the bootstrap is seeded, so the choice is
the same every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.errors import TrainingError
from nexlify.evaluation.edge import excess_of_returns, window_daily_returns
from nexlify.market.evaluate import greedy_run


@dataclass(frozen=True)
class Candidate:
    """A saved model the final choice may fall on, with the validation score it was given."""

    model_path: str
    val_score: float


def highest_lower_bound(excess: Sequence[dict[str, Any]]) -> int:
    """Index of the entry (an :func:`excess_of_returns` record) with the highest ``low_pct``;
    the earlier one on ties. An entry without an interval (fewer than 2 days) cannot win.

    Raises TrainingError when no entry has an interval.
    """
    best: int | None = None
    for k, entry in enumerate(excess):
        low = entry["low_pct"]
        if low is not None and (best is None or low > excess[best]["low_pct"]):
            best = k
    if best is None:
        raise TrainingError(
            "pipeline.selection lcb: no candidate traded 2 or more days of the validation "
            "window, so no lower bound can be estimated; lengthen data.validation_days (fewer "
            "walk-forward folds) or use --selection score"
        )
    return best


def choose_by_lower_bound(
    daily_returns: Sequence[np.ndarray], *, seed: int
) -> tuple[int, list[dict[str, Any]]]:
    """(index of the winner, each series' excess record) for daily returns over cash, one
    array per candidate; every interval uses the same bootstrap seed, so candidates are
    compared on the same resamples of days."""
    excess = [excess_of_returns(np.asarray(r, dtype=np.float64), seed=seed) for r in daily_returns]
    return highest_lower_bound(excess), excess


def candidate_daily_returns(path: str, val: MarketData, market: MarketConfig) -> np.ndarray:
    """Daily returns of one continuous greedy run of the model in ``path`` over ``val``."""
    from nexlify.agent.ensemble import load_policy

    agent, _ = load_policy(path)
    return window_daily_returns(val, greedy_run(agent, val, market))


def select_by_lcb(
    candidates: Sequence[Candidate], val: MarketData, market: MarketConfig, *, seed: int
) -> dict[str, Any]:
    """The selection record: every candidate's figures on ``val`` and the one chosen."""
    if not candidates:
        raise TrainingError("pipeline.selection lcb: no saved candidate model to choose from")
    returns = [candidate_daily_returns(c.model_path, val, market) for c in candidates]
    chosen, excess = choose_by_lower_bound(returns, seed=seed)
    start, end = val.span()
    return {
        "rule": "lcb",
        "why": "highest lower bound of the 95% stationary-bootstrap interval of the mean daily "
        "excess return over cash; the earlier candidate on ties",
        "window": {"start": start.isoformat(), "end": end.isoformat(), "bars": val.n_bars},
        "seed": seed,
        "candidates": [
            {
                "model_path": c.model_path,
                "val_score": c.val_score,
                "excess_daily_pct": e["mean_pct"],
                "low_pct": e["low_pct"],
                "high_pct": e["high_pct"],
                "n_days": e["n_days"],
            }
            for c, e in zip(candidates, excess, strict=True)
        ],
        "chosen": candidates[chosen].model_path,
        "chosen_index": chosen,
    }
