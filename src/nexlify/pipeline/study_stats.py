"""Statistics of the out-of-sample study: each policy's year, the deflated Sharpe ratio of the
model, and the registry of configurations tried that the deflation counts."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.errors import ConfigError
from nexlify.evaluation.edge import excess_of_returns
from nexlify.evaluation.stats import (
    deflated_sharpe_ratio,
    sharpe_ratio,
    skew_kurtosis,
)
from nexlify.io import atomic_write_json, exclusive
from nexlify.market.evaluate import EvaluationResult

MODEL_ROWS = {
    "model": "pooled",
    "model_rolling": "pooled_rolling",
    "model_meta_rolling": "pooled_meta_rolling",
}
"""The model's rows of a study (frozen, rolling retraining, meta-init + rolling retraining) and
the results key of each one's pooled excess over cash."""

# ---- per-policy statistics -------------------------------------------------------------------


def policy_row(result: EvaluationResult, excess: np.ndarray, seed: int) -> dict[str, Any]:
    """Headline metrics of one policy and its daily ``excess`` return over cash, with a 95%
    stationary-bootstrap interval (daily returns are serially dependent; blocks of mean
    length n^(1/3) days keep that)."""
    metrics = result.metrics[0].to_dict()
    skew, kurt = skew_kurtosis(excess)
    return {
        **{k: metrics[k] for k in ("total_return_pct", "sharpe", "max_drawdown_pct",
                                   "n_trades", "fees_paid")},
        **excess_fields(excess, seed),
        "daily_sharpe": sharpe_ratio(excess),
        "days": int(excess.size),
        "skew": skew,
        "kurtosis": kurt,
    }  # fmt: skip


def deflated_sharpe(row: Mapping[str, Any], n_trials: int, trial_sharpes: list[float]) -> Any:
    """The model's deflated Sharpe ratio given ``n_trials`` configurations tried.

    The variance of Sharpe ratios across trials is that of the trials' daily Sharpe ratios on
    the same year and venue when at least two are known, else the sampling variance of a
    zero-edge Sharpe estimate, 1 / (days - 1).
    """
    days = int(row["days"])
    variance = float(np.var(trial_sharpes, ddof=1)) if len(trial_sharpes) >= 2 else 1.0 / (days - 1)
    try:
        value = deflated_sharpe_ratio(
            row["daily_sharpe"], n_trials, variance, days, row["skew"], row["kurtosis"]
        )
    except ValueError as exc:  # moments that give no Sharpe variance: said, not hidden
        return {"value": None, "why": str(exc), "n_trials": n_trials}
    return {"value": value, "n_trials": n_trials, "sharpe_variance": variance}


# ---- the configurations tried ------------------------------------------------------------------


def load_trials(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"configs": {}}
    try:
        trials = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: the study's trial registry is unreadable: {exc}") from exc
    return dict(trials)


def record_trial(path: Path, key: str, output: str, cells: Mapping[str, float]) -> dict[str, Any]:
    """Count configuration ``key`` (once) and store its model's daily Sharpe per year/venue.

    Studies running at once may share the registry: the read-modify-write holds its lock.
    """
    with exclusive(path):
        trials = load_trials(path)
        entry = trials["configs"].setdefault(
            key, {"output": output,
                  "first_run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "daily_sharpe": {}},
        )  # fmt: skip
        entry["daily_sharpe"].update(cells)
        trials["n_trials"] = len(trials["configs"])
        atomic_write_json(path, trials)
    return trials


def deflate_all(results: dict[str, Any], trials: Mapping[str, Any]) -> None:
    n_trials = len(trials["configs"])
    results["n_trials"] = n_trials
    for year, entry in results["years"].items():
        for venue, cell in entry["venues"].items():
            sharpes = [
                c["daily_sharpe"][f"{year}/{venue}"]
                for c in trials["configs"].values()
                if f"{year}/{venue}" in c["daily_sharpe"]
            ]
            for policy in MODEL_ROWS:
                if policy in cell:
                    cell[policy]["deflated_sharpe"] = deflated_sharpe(
                        cell[policy], n_trials, sharpes
                    )


def pooled_excess(
    results: Mapping[str, Any], venue: str, policy: str = "model"
) -> dict[str, Any] | None:
    """Mean daily excess return of ``policy`` over cash across the finished years of ``venue``
    (95% CI); None when no year has that policy there."""
    daily = [
        np.asarray(entry["venues"][venue][f"{policy}_excess_daily"])
        for entry in results["years"].values()
        if f"{policy}_excess_daily" in entry["venues"].get(venue, {})
    ]
    if not daily:
        return None
    pooled = np.concatenate(daily)
    return {"years": len(daily), "days": int(pooled.size), **excess_fields(pooled, 0)}


def excess_fields(excess: np.ndarray, seed: int) -> dict[str, Any]:
    """The study's names for :func:`~nexlify.evaluation.edge.excess_of_returns`' mean daily
    excess over cash and its 95% stationary-bootstrap interval, in percent."""
    found = excess_of_returns(excess, seed=seed)
    return {
        "excess_daily_pct": found["mean_pct"],
        "excess_daily_ci95_pct": [found["low_pct"], found["high_pct"]],
    }
