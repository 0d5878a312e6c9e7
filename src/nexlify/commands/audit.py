"""``nexlify audit-lookahead``: features and a model's decisions on data cut at several points."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from nexlify.commands import COMMAND_HELP
from nexlify.config import MarketConfig
from nexlify.data.candles import load_pairs
from nexlify.data.sources import DEFAULT_PAIRS, SYNTHETIC_DAYS
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.evaluation.backtest import load_model_for_backtest
from nexlify.evaluation.lookahead import audit_lookahead
from nexlify.train.trainer import GreedyActor

LEAK_EXIT_CODE = 6


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit-lookahead",
        help=COMMAND_HELP["audit-lookahead"],
        description="Recomputes the features (and, with --model, the model's observations and "
        "greedy decisions) on the data cut at several points and checks that nothing before "
        f"each cut changes. Exit code 0: clean; {LEAK_EXIT_CODE}: a leak was found.",
    )
    parser.add_argument("--model", metavar="PATH", help="also audit this model's decisions")
    parser.add_argument("--data-dir", metavar="DIR", help="candle files (default: synthetic)")
    parser.add_argument("--pairs", nargs="+", metavar="PAIR", help="pairs (default: the model's)")
    parser.add_argument("--timeframe", default=None, help="timeframe (default: the model's or 1h)")
    parser.add_argument("--cuts", type=int, default=5, metavar="N", help="cut points (default 5)")
    parser.set_defaults(handler=start_audit)


def start_audit(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify audit-lookahead``."""
    agent: GreedyActor | None = None
    market = MarketConfig()
    pairs, timeframe = tuple(args.pairs or DEFAULT_PAIRS), args.timeframe or "1h"
    if args.model:
        agent, spec = load_model_for_backtest(args.model)
        market = spec.market
        pairs, timeframe = tuple(args.pairs or spec.pairs), args.timeframe or spec.timeframe
    if args.data_dir:
        frames = load_pairs(args.data_dir, list(pairs), timeframe)
        source = args.data_dir
    else:
        bars = int(SYNTHETIC_DAYS * 24) if timeframe == "1h" else 5000
        frames = generate_synthetic_candles(list(pairs), timeframe, n_bars=bars, seed=0)
        source = "synthetic market"
    report = audit_lookahead(frames, timeframe, n_cuts=args.cuts, agent=agent, market=market)
    table = Table(title=f"Look-ahead audit on {source} ({report.bars} bars)")
    for column in ("cut at bar", "features", "decisions"):
        table.add_column(column)
    for cut in report.cuts:
        leaks = {leak.kind: leak for leak in report.leaks if leak.cut == cut}
        cells = []
        for kind, checked in (("feature", True), ("decision", report.checked_decisions)):
            leak = leaks.get(kind)
            if not checked:
                cells.append("not checked (no --model)")
            elif leak is None:
                cells.append("[green]unchanged[/]")
            else:
                cells.append(f"[red]LEAK at bar {leak.bar} ({leak.time}): {leak.detail}[/]")
        table.add_row(str(cut), *cells)
    console.print(table)
    if report.clean:
        console.print("[bold green]no look-ahead: nothing before any cut changed[/]")
        return 0
    console.print(f"[bold red]{len(report.leaks)} leak(s) found[/]")
    return LEAK_EXIT_CODE
