"""``nexlify baselines``: cash, buy-and-hold, trend, always-long, SMA crossover and random."""

from __future__ import annotations

import argparse
import logging

from rich.console import Console

from nexlify.commands.train import resolve_run_config
from nexlify.evaluation.edge import excess_of_returns, exposures_to_market, window_daily_returns
from nexlify.io import atomic_write_json
from nexlify.market.baselines import run_baselines
from nexlify.pipeline.data_choice import load_training_market
from nexlify.report.tables import (
    excess_caption,
    excess_rows,
    exposure_caption,
    exposure_rows,
    policy_table,
)

TABLE_ROWS = (
    ("score", "score", ".3f"),
    ("avg_return", "return %", "+.3f"),
    ("avg_sharpe", "Sharpe", ".2f"),
    ("avg_win_rate", "win rate", ".2f"),
    ("avg_drawdown", "max DD %", ".2f"),
    ("avg_trades", "trades", ".1f"),
)
"""Rows of the table: (key in the JSON, title, format); averages over the windows."""


def start_baselines(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify baselines``: metrics over the validation window of the market."""
    config = resolve_run_config(args)
    log = logging.getLogger("nexlify")
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.setLevel(logging.INFO)
    market = load_training_market(config.data, log)
    _, validation = market.split_last_days(config.data.validation_days)
    results = run_baselines(validation, config.market, history=market)
    start, end = validation.span()
    figures = {name: {"score": r.score(), **r.average()} for name, r in results.items()}
    daily = {name: window_daily_returns(validation, r, None) for name, r in results.items()}
    excess_table = {name: excess_of_returns(days) for name, days in daily.items()}
    exposure = exposures_to_market(daily)
    names = list(results)
    rows = [
        (title, [format(figures[n][key], fmt) for n in names]) for key, title, fmt in TABLE_ROWS
    ]
    table = policy_table(
        f"Baselines on {market.source}, {start:%Y-%m-%d} .. {end:%Y-%m-%d}",
        names,
        rows + excess_rows(excess_table, names) + exposure_rows(exposure, names),
        f"averages over windows of {config.market.env.episode_length} bars; "
        + excess_caption(excess_table["cash"]["method"] if "cash" in excess_table else "n/a")
        + exposure_caption(exposure),
    )
    console.print(table)
    if args.json:
        out = {
            n: {**figures[n], "excess_daily_return": excess_table[n]}
            | ({"market_exposure": exposure[n]} if exposure else {})
            for n in names
        }
        atomic_write_json(args.json, {"data": market.describe(), "baselines": out})
    return 0
