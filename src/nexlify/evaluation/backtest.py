"""Backtest a saved model beside the baselines, with the costs and risk rules it trained under.

Every policy also gets its mean daily return over cash (cash earns 0) with a 95% stationary
bootstrap interval, so "beats doing nothing" is judged with its uncertainty.

The model's checkpoint records its pairs, timeframe, feature names, feature set and market
settings; the data must provide the same pairs and features (checked, with a clear error), and
is built with the model's own feature set (:attr:`ModelSpec.features`). The backtest runs once
over the whole period (one window), greedy, through the same simulator as training.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.agent.ensemble import load_policy
from nexlify.config import MarketConfig, from_dict
from nexlify.data.features import FeatureConfig, feature_config_from_dict, feature_warmup
from nexlify.data.market_data import MarketData
from nexlify.errors import CheckpointError, ConfigError, DataError
from nexlify.evaluation.edge import excess_of_returns, exposures_to_market, window_daily_returns
from nexlify.market.baselines import run_baselines
from nexlify.market.evaluate import EvaluationResult, GreedyActor, greedy_run

METRIC_COLUMNS = (
    ("total_return_pct", "return %", "+.2f"),
    ("sharpe", "Sharpe", ".2f"),
    ("sortino", "Sortino", ".2f"),
    ("max_drawdown_pct", "max DD %", ".2f"),
    ("win_rate", "win rate", ".2f"),
    ("profit_factor", "profit factor", ".2f"),
    ("n_trades", "trades", "d"),
    ("exposure", "exposure", ".2f"),
    ("fees_paid", "fees", ".2f"),
)
"""Metrics shown by the backtest table: (EpisodeMetrics field, column title, format)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint says about the market it was trained on."""

    pairs: tuple[str, ...]
    timeframe: str
    feature_names: tuple[str, ...]
    market: MarketConfig
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """The candle feature set it was trained on (checkpoints from before the record: default)."""

    @property
    def feature_warmup(self) -> int:
        """Leading bars its features need before the first value (paper/live warm-up)."""
        return feature_warmup(self.features)


def model_spec(meta: dict[str, Any], path: str | Path) -> ModelSpec:
    """Read the market description a pipeline checkpoint carries in ``extra``."""
    extra = meta.get("extra") or {}
    missing = [
        k for k in ("pairs", "timeframe", "feature_names", "market_config") if k not in extra
    ]
    if missing:
        raise CheckpointError(
            f"{path}: the checkpoint does not describe its market (missing {', '.join(missing)}); "
            "it was not saved by the Nexlify pipeline"
        )
    return ModelSpec(
        pairs=tuple(extra["pairs"]),
        timeframe=str(extra["timeframe"]),
        feature_names=tuple(extra["feature_names"]),
        market=from_dict(MarketConfig, extra["market_config"], "market_config"),
        features=_recorded_features(extra, path),
    )


def _recorded_features(extra: dict[str, Any], path: str | Path) -> FeatureConfig:
    """The feature set a checkpoint records; the default one for checkpoints saved before it
    was recorded (their feature names are still checked against the data)."""
    recorded = extra.get("feature_config")
    if recorded is None:
        return FeatureConfig()
    try:
        return feature_config_from_dict(recorded)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: its recorded feature set is invalid: {exc}") from None


def check_compatible(spec: ModelSpec, data: MarketData, path: str | Path) -> None:
    """The data must have the model's pairs (in order), timeframe and features."""
    if data.pairs != spec.pairs:
        raise DataError(f"{path} trades {list(spec.pairs)} but the data has {list(data.pairs)}")
    if data.timeframe != spec.timeframe:
        raise DataError(
            f"{path} was trained on {spec.timeframe} bars, the data is {data.timeframe}"
        )
    if data.feature_names != spec.feature_names:
        raise DataError(
            f"{path} expects features {list(spec.feature_names)} but the data computes "
            f"{list(data.feature_names)}"
        )


def cut_period(data: MarketData, start: str | None, end: str | None) -> MarketData:
    """Bars whose open time is within [start, end] (UTC); a date-only ``end`` includes its day."""
    first = data.index_at(start) if start else 0
    stop = data.n_bars
    if end:
        date_only = len(end.strip()) <= len("YYYY-MM-DD")
        step = pd.Timedelta(days=1) if date_only else pd.Timedelta(seconds=1)
        stop = data.index_at(pd.Timestamp(end) + step)
    if stop - first < 2:
        span = " .. ".join(t.isoformat() for t in data.span())
        raise DataError(f"backtest period {start} .. {end} holds no bars of the data ({span})")
    return data.slice(first, stop)


@dataclass
class BacktestResult:
    """The model's and the baselines' results over the same period."""

    model: EvaluationResult
    baselines: dict[str, EvaluationResult]
    data: MarketData

    def runs(self) -> dict[str, EvaluationResult]:
        """The model first, then every baseline."""
        return {"model": self.model, **self.baselines}

    @cached_property
    def daily(self) -> dict[str, np.ndarray]:
        """Per policy, its daily returns (cash earns 0: they are its excess over cash), resampled
        once for the excess and the exposure."""
        return {name: window_daily_returns(self.data, run) for name, run in self.runs().items()}

    def excess(self, seed: int = 0) -> dict[str, dict[str, Any]]:
        """Per policy, the mean daily return over cash with its 95% bootstrap interval."""
        return {name: excess_of_returns(days, seed=seed) for name, days in self.daily.items()}

    def exposure(self, seed: int = 0) -> dict[str, dict[str, Any]]:
        """Per policy, its beta to buy-and-hold's daily returns and the alpha beyond it with
        its 95% interval (:func:`exposures_to_market`); empty without buy-and-hold."""
        return exposures_to_market(self.daily, seed=seed)

    def table(self) -> dict[str, Any]:
        """``{"model": {...metrics}, "baselines": {name: {...metrics}}, "period": {...},
        "excess_daily_return": {policy: {mean_pct, low_pct, high_pct, ...}},
        "market_exposure": {policy: {beta, alpha_daily_pct, alpha_ci95_pct, ...}}}``."""
        start, end = self.data.span()
        return {
            "period": {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "bars": self.data.n_bars,
            },
            "data_source": self.data.source,
            "model": self.model.metrics[0].to_dict(),
            "baselines": {k: r.metrics[0].to_dict() for k, r in self.baselines.items()},
            "excess_daily_return": self.excess(),
            "market_exposure": self.exposure(),
        }


def backtest(
    agent: GreedyActor,
    spec: ModelSpec,
    data: MarketData,
    seed: int = 0,
    history: MarketData | None = None,
) -> BacktestResult:
    """Greedy run of ``agent`` over all of ``data``, and the baselines over the same bars
    (``history``: the market ``data`` was cut from, whose earlier bars the trend may use)."""
    config = replace(spec.market, env=replace(spec.market.env, episode_length=0))
    model = greedy_run(agent, data, config)
    baselines = run_baselines(data, config, episode_length=0, seed=seed, history=history)
    return BacktestResult(model=model, baselines=baselines, data=data)


def load_model_for_backtest(path: str | Path) -> tuple[GreedyActor, ModelSpec]:
    """A saved model or ensemble (never executes code from the file) and its market."""
    agent, meta = load_policy(path)
    return agent, model_spec(meta, path)
