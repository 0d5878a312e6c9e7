"""The baselines of a study folder's test years, recomputed from the candles (no training).

Shared by ``target_baselines.py`` and ``exposure.py``: each loads a study folder's
``config.yaml`` (timeframe, risk rules, fees, decision interval) onto the shared candles and
runs the baselines once over each test year, as ``nexlify study`` ran them beside its models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nexlify.data.market_data import MarketData
from nexlify.evaluation.edge import window_daily_returns
from nexlify.market.baselines import BASELINES, run_baselines
from nexlify.market.evaluate import EvaluationResult
from nexlify.pipeline.study import YearMarkets
from nexlify.train.config import RunConfig, load_run_config, run_config_from_dict


@dataclass(frozen=True)
class YearBaselines:
    """The baselines over one test year on one venue."""

    year: int
    venue: str
    data: MarketData
    runs: dict[str, EvaluationResult]
    excess: dict[str, np.ndarray]
    """Each baseline's daily returns less cash's (the study's excess over cash)."""


def folder_config(config_yaml: Path, data_dir: str) -> RunConfig:
    """A study run's config with its data read from ``data_dir``."""
    return run_config_from_dict({"data": {"data_dir": data_dir}}, load_run_config(config_yaml))


def baseline_years(
    config: RunConfig, years: Iterable[YearMarkets], names: tuple[str, ...] = BASELINES
) -> Iterator[YearBaselines]:
    """The baselines ``names`` (cash among them) over every test year and venue of ``years``
    (``nexlify.pipeline.study.prepare_markets``), one continuous run each, the random policy
    drawn with the config's base seed."""
    if "cash" not in names:
        raise ValueError("baseline_years: cash is needed for the excess over cash")
    for markets in years:
        for venue, data in markets.tests.items():
            runs = run_baselines(data, config.market, episode_length=0,
                                 seed=config.pipeline.base_seed, names=names)  # fmt: skip
            cash = window_daily_returns(data, runs["cash"])
            excess = {name: window_daily_returns(data, run) - cash for name, run in runs.items()}
            yield YearBaselines(markets.year, venue, data, runs, excess)
