"""``nexlify backtest``: a saved model beside cash, buy-and-hold, trend and the rule baselines."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rich.console import Console
from rich.table import Table

from nexlify.commands import COMMAND_HELP
from nexlify.evaluation.backtest import (
    METRIC_COLUMNS,
    backtest,
    check_compatible,
    cut_period,
    load_model_for_backtest,
)
from nexlify.io import atomic_write_json, atomic_write_text
from nexlify.pipeline.data_choice import load_training_market
from nexlify.report.html import backtest_report_html
from nexlify.report.tables import (
    excess_caption,
    excess_rows,
    exposure_caption,
    exposure_rows,
    policy_table,
)
from nexlify.train.config import DataConfig


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "backtest",
        help=COMMAND_HELP["backtest"],
        description="Greedy run of a saved model over a period, with the costs and risk rules "
        "it was trained with, beside cash, buy-and-hold, daily trend (no risk rules), "
        "always-long, an SMA crossover and a random policy (the model's risk rules).",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="a model .pt file")
    parser.add_argument("--data-dir", metavar="DIR", help="folder of candle files for its pairs")
    parser.add_argument("--source", choices=["auto", "files", "store", "synthetic"],
                        default="auto", help="where candles come from (default auto)")  # fmt: skip
    parser.add_argument("--synthetic-seed", type=int, default=0, metavar="SEED")
    parser.add_argument("--start", metavar="DATE", help="first bar (UTC date or time)")
    parser.add_argument("--end", metavar="DATE", help="last bar (UTC date or time)")
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    parser.set_defaults(handler=start_backtest)


def start_backtest(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify backtest``."""
    agent, spec = load_model_for_backtest(args.model)
    data_config = DataConfig(
        pairs=spec.pairs,
        timeframe=spec.timeframe,
        source=args.source,
        data_dir=args.data_dir,
        synthetic_seed=args.synthetic_seed,
    )
    market = load_training_market(data_config, logging.getLogger("nexlify"), spec.features)
    if market.source == "synthetic":
        console.print("[bold yellow]backtesting on the SYNTHETIC market (no data given)[/]")
    check_compatible(spec, market, args.model)
    result = backtest(agent, spec, cut_period(market, args.start, args.end), history=market)
    table_data = result.table()
    table = backtest_table(table_data, market.source)
    console.print(table)
    if args.json:
        atomic_write_json(args.json, table_data)
    if args.html:
        atomic_write_text(args.html, backtest_report_html(result, args.model))
    return 0


def backtest_table(table_data: dict[str, Any], source: str) -> Table:
    """Metrics as rows, policies as columns: readable in an 80-column terminal."""
    period = table_data["period"]
    metrics = {"model": table_data["model"], **table_data["baselines"]}
    excess = table_data["excess_daily_return"]
    rows = [
        (title, ["inf" if m[key] is None else format(m[key], fmt) for m in metrics.values()])
        for key, title, fmt in METRIC_COLUMNS
    ]
    title = (f"Backtest {period['start'][:16]} .. {period['end'][:16]} "
             f"({period['bars']} bars, {source})")  # fmt: skip
    policies = list(metrics)
    exposure = table_data.get("market_exposure", {})
    caption = excess_caption(excess["model"]["method"])
    return policy_table(
        title,
        policies,
        rows + excess_rows(excess, policies) + exposure_rows(exposure, policies),
        caption + exposure_caption(exposure),
    )
