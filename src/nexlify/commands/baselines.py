"""``nexlify baselines``: buy-and-hold, SMA crossover and random through the simulator."""

from __future__ import annotations

import argparse
import logging

from rich.console import Console
from rich.table import Table

from nexlify.commands.train import resolve_run_config
from nexlify.io import atomic_write_json
from nexlify.market.baselines import run_baselines
from nexlify.pipeline.data_choice import load_training_market


def start_baselines(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify baselines``: metrics over the validation window of the market."""
    config = resolve_run_config(args)
    log = logging.getLogger("nexlify")
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.setLevel(logging.INFO)
    market = load_training_market(config.data, log)
    _, validation = market.split_last_days(config.data.validation_days)
    results = run_baselines(validation, config.market)
    start, end = validation.span()
    table = Table(title=f"Baselines on {market.source}, {start:%Y-%m-%d} .. {end:%Y-%m-%d}")
    for col in ("policy", "score", "return %", "Sharpe", "win rate", "max DD %", "trades"):
        table.add_column(col, justify="right")
    out = {}
    for name, result in results.items():
        avg = result.average()
        out[name] = {"score": result.score(), **avg}
        table.add_row(name, f"{result.score():.3f}", f"{avg['avg_return']:+.3f}",
                      f"{avg['avg_sharpe']:.2f}", f"{avg['avg_win_rate']:.2f}",
                      f"{avg['avg_drawdown']:.2f}", f"{avg['avg_trades']:.1f}")  # fmt: skip
    console.print(table)
    if args.json:
        atomic_write_json(args.json, {"data": market.describe(), "baselines": out})
    return 0
