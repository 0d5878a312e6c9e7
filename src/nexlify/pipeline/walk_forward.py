"""Walk-forward cross-validation: train on the past, test on the unseen bars that follow.

Each fold (``nexlify.data.splits``) trains one run on its training span, whose last
``validation_days`` pick the checkpoint, then the chosen model and the baselines trade the
fold's test span (after the embargo) once, continuously, with the same costs and risk rules.
Out-of-sample metrics are reported per fold and aggregated (mean and IQM); each policy's daily
returns over all test spans give its mean daily excess return over cash with a 95% interval.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.agent.ensemble import load_policy
from nexlify.data.market_data import MarketData
from nexlify.data.splits import Fold, walk_forward_days
from nexlify.errors import DataError
from nexlify.evaluation.edge import excess_of_returns, exposures_to_market, window_daily_returns
from nexlify.evaluation.stats import iqm
from nexlify.io import atomic_write_json
from nexlify.market.baselines import run_baselines
from nexlify.market.evaluate import greedy_run
from nexlify.pipeline.auto_retrain import LOG_FILE, ProgressSink, run_initial_phase
from nexlify.pipeline.placement import units_at_once
from nexlify.pipeline.runs import UnitTask
from nexlify.train.config import RunConfig

SUMMARY_FILE = "walk_forward_summary.json"
HEADLINE = ("total_return_pct", "sharpe", "max_drawdown_pct", "win_rate", "n_trades")
"""Out-of-sample metrics aggregated across folds."""


@dataclass(frozen=True)
class WalkForwardSpec:
    """Fold geometry and the training budget of each fold."""

    train_days: float = 365.0
    """Length of each fold's training span (its last validation_days select the checkpoint)."""
    test_days: float = 60.0
    """Length of each fold's out-of-sample test span."""
    step_days: float | None = None
    """Shift between folds (default: test_days, so test windows tile the data)."""
    embargo_days: float = 1.0
    """Unused gap between a fold's training and test spans."""
    mode: str = "rolling"
    """rolling (fixed-length training window) or anchored (growing from the start)."""
    validation_days: float = 30.0
    """Last days of each training span held out to choose the checkpoint."""
    episodes: int = 100
    """Training episodes per fold."""
    max_folds: int | None = None
    """Use only the first N folds."""


def make_folds(market: MarketData, spec: WalkForwardSpec) -> list[Fold]:
    folds = walk_forward_days(
        market.time, market.timeframe, spec.train_days, spec.test_days,
        step_days=spec.step_days, embargo_days=spec.embargo_days, mode=spec.mode,
    )  # fmt: skip
    if spec.max_folds is not None:
        folds = folds[: spec.max_folds]
    if not folds:
        start, end = market.span()
        raise DataError(
            f"walk-forward: {market.n_bars} bars ({start:%Y-%m-%d} .. {end:%Y-%m-%d}) fit no fold "
            f"of {spec.train_days:g} training + {spec.embargo_days:g} embargo + "
            f"{spec.test_days:g} test days"
        )
    return folds


def _fold_task(
    config: RunConfig,
    market: MarketData,
    fold: Fold,
    spec: WalkForwardSpec,
    out_dir: Path,
    log: logging.Logger,
) -> UnitTask:
    train_span = market.slice(fold.train_start, fold.train_stop)
    fit, select = train_span.split_last_days(spec.validation_days)
    return UnitTask(
        label=f"fold_{fold.index + 1}",
        seed=config.pipeline.seed_of_run(0) + fold.index,
        episodes=spec.episodes,
        config=config,
        train_data=fit,
        val_data=select,
        model_dir=str(out_dir / f"fold_{fold.index + 1}"),
        threads=config.train.torch_threads,
        log_path=str(out_dir / LOG_FILE),  # a worker process logs its fold there too
        logger_name=log.name,
    )


def _aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in HEADLINE:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        out[f"mean_{key}"] = float(values.mean())
        out[f"iqm_{key}"] = iqm(values)
    return out


def run_walk_forward(
    config: RunConfig,
    market: MarketData,
    spec: WalkForwardSpec,
    out_dir: Path,
    log: logging.Logger,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Train and test every fold; write ``walk_forward_summary.json``; return the summary."""
    started = time.perf_counter()
    folds = make_folds(market, spec)
    log.info("walk-forward: %d %s folds on %s (%s)", len(folds), spec.mode,
             ", ".join(market.pairs), market.source)  # fmt: skip
    tasks = [_fold_task(config, market, fold, spec, out_dir, log) for fold in folds]
    pcfg = config.pipeline
    workers = units_at_once(pcfg.backend, pcfg.workers, len(tasks), pcfg.share_cores)
    outcomes = run_initial_phase(tasks, workers, lambda o: None, progress)
    test_cfg = replace(config.market, env=replace(config.market.env, episode_length=0))
    fold_rows = []
    daily: dict[str, list[np.ndarray]] = {}
    for fold, outcome in zip(folds, outcomes, strict=True):
        test = market.slice(fold.test_start, fold.test_stop)
        agent, _ = load_policy(outcome["model_path"])
        model = greedy_run(agent, test, test_cfg)
        baselines = run_baselines(test, test_cfg, episode_length=0, seed=fold.index,
                                  history=market.slice(0, fold.test_stop))  # fmt: skip
        for name, run in {"model": model, **baselines}.items():
            daily.setdefault(name, []).append(window_daily_returns(test, run))
        start, end = test.span()
        row = {
            "fold": fold.index + 1,
            "train": [_iso(market, fold.train_start), _iso(market, fold.train_stop - 1)],
            "test": [start.isoformat(), end.isoformat()],
            "selection_score": outcome["val_score"],
            "model": model.metrics[0].to_dict(),
            "baselines": {k: r.metrics[0].to_dict() for k, r in baselines.items()},
            "model_path": outcome["model_path"],
        }  # fmt: skip
        fold_rows.append(row)
        log.info("fold %d test %s .. %s: model %+.2f%% (Sharpe %.2f) | buy-and-hold %+.2f%% "
                 "(Sharpe %.2f) | cash 0", fold.index + 1, f"{start:%Y-%m-%d}",
                 f"{end:%Y-%m-%d}", row["model"]["total_return_pct"], row["model"]["sharpe"],
                 row["baselines"]["buy_and_hold"]["total_return_pct"],
                 row["baselines"]["buy_and_hold"]["sharpe"])  # fmt: skip
    pooled = {name: np.concatenate(parts) for name, parts in daily.items()}  # all test days
    summary = {
        "mode": spec.mode,
        "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__},
        "data": market.describe(),
        "folds": fold_rows,
        "out_of_sample": {
            "model": _aggregate([r["model"] for r in fold_rows]),
            **{
                name: _aggregate([r["baselines"][name] for r in fold_rows])
                for name in fold_rows[0]["baselines"]
            },
        },
        "excess_daily_return": {name: excess_of_returns(days) for name, days in pooled.items()},
        "market_exposure": exposures_to_market(pooled),
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def _iso(market: MarketData, bar: int) -> str:
    return pd.Timestamp(int(market.time[bar]), unit="s", tz="UTC").isoformat()
