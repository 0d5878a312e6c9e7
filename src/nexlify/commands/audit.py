"""``nexlify audit-lookahead``: features, observations and decisions on inputs cut at points."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from nexlify.commands import COMMAND_HELP
from nexlify.commands.options import STRATEGY_OPTIONS, overrides_from_args
from nexlify.config import MarketConfig, from_dict, to_dict
from nexlify.data.candles import load_pairs
from nexlify.data.sources import DEFAULT_PAIRS, SYNTHETIC_DAYS
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.evaluation.backtest import load_model_for_backtest
from nexlify.evaluation.lookahead import AuditReport, audit_lookahead
from nexlify.evaluation.lookahead_inputs import ExternalInputs
from nexlify.market.evaluate import GreedyActor
from nexlify.pipeline.data_choice import external_folder
from nexlify.train.config import DataConfig

LEAK_EXIT_CODE = 6


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit-lookahead",
        help=COMMAND_HELP["audit-lookahead"],
        description="Cuts every input (candles, external daily series as published, strategy "
        "CSVs and venue candles) at several points, recomputes the features, every observation "
        "column of the env (under a fixed action schedule) and, with --model, the model's greedy "
        "decisions, and checks that nothing before each cut changes. Exit code 0: clean; "
        f"{LEAK_EXIT_CODE}: a leak was found.",
    )
    parser.add_argument("--model", metavar="PATH", help="also audit this model's decisions")
    parser.add_argument("--data-dir", metavar="DIR", help="candle files (default: synthetic)")
    parser.add_argument("--pairs", nargs="+", metavar="PAIR", help="pairs (default: the model's)")
    parser.add_argument("--timeframe", default=None, help="timeframe (default: the model's or 1h)")
    parser.add_argument("--cuts", type=int, default=5, metavar="N", help="cut points (default 5)")
    parser.add_argument(
        "--external",
        nargs="+",
        default=[],
        metavar="NAME",
        help="external daily series joined as features (fear_greed onchain funding orderflow "
        "sentiment), audited as published",
    )
    parser.add_argument(
        "--external-dir", metavar="DIR", help="external series CSVs (default <store>/external)"
    )
    for flags, section, name, kwargs in STRATEGY_OPTIONS:
        parser.add_argument(*flags, dest=f"{section}__{name}", default=None, **kwargs)
    parser.set_defaults(handler=start_audit)


def _with_strategy_flags(market: MarketConfig, args: argparse.Namespace) -> MarketConfig:
    """``market`` with the strategy flags given on the command line."""
    flags = overrides_from_args(args).get("market", {}).get("strategies")
    if not flags:
        return market
    values = to_dict(market)
    for key, value in flags.items():
        if isinstance(value, dict):
            values["strategies"][key].update(value)
        else:
            values["strategies"][key] = value
    return from_dict(MarketConfig, values)


def start_audit(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify audit-lookahead``."""
    agent: GreedyActor | None = None
    market = MarketConfig()
    pairs, timeframe = tuple(args.pairs or DEFAULT_PAIRS), args.timeframe or "1h"
    features = None
    if args.model:
        agent, spec = load_model_for_backtest(args.model)
        market, features = spec.market, spec.features
        pairs, timeframe = tuple(args.pairs or spec.pairs), args.timeframe or spec.timeframe
    market = _with_strategy_flags(market, args)
    if args.data_dir:
        frames = load_pairs(args.data_dir, list(pairs), timeframe)
        source = args.data_dir
    else:
        bars = int(SYNTHETIC_DAYS * 24) if timeframe == "1h" else 5000
        frames = generate_synthetic_candles(list(pairs), timeframe, n_bars=bars, seed=0)
        source = "synthetic market"
    external = None
    if args.external:
        folder = external_folder(DataConfig(external_dir=args.external_dir))
        external = ExternalInputs(tuple(args.external), folder)
    report = audit_lookahead(
        frames, timeframe, n_cuts=args.cuts, agent=agent, market=market, external=external,
        features=features,
    )  # fmt: skip
    console.print(_table(report, source, external is not None))
    for line in report.covered:
        console.print(f"covered: {line}")
    if report.clean:
        console.print("[bold green]no look-ahead: nothing before any cut changed[/]")
        return 0
    for leak in report.leaks:  # in full, where the table's cells wrap
        console.print(
            f"LEAK ({leak.kind}) cut at bar {leak.cut}: first at bar {leak.bar} ({leak.time}): "
            f"{leak.detail}",
            soft_wrap=True,
        )
    console.print(f"[bold red]{len(report.leaks)} leak(s) found[/]")
    return LEAK_EXIT_CODE


def _table(report: AuditReport, source: str, has_external: bool) -> Table:
    """One row per cut, one column per check: unchanged, LEAK with where, or not checked."""
    checks = (
        ("features", "feature", True, ""),
        ("external series", "external", has_external, "no --external"),
        ("observations", "observation", True, ""),
        ("decisions", "decision", report.checked_decisions, "no --model"),
    )
    table = Table(title=f"Look-ahead audit on {source} ({report.bars} bars)")
    table.add_column("cut at bar")
    for title, *_ in checks:
        table.add_column(title)
    for cut in report.cuts:
        leaks = {leak.kind: leak for leak in report.leaks if leak.cut == cut}
        cells = []
        for _, kind, checked, why_not in checks:
            leak = leaks.get(kind)
            if not checked:
                cells.append(f"not checked ({why_not})")
            elif leak is None:
                cells.append("[green]unchanged[/]")
            else:
                cells.append(f"[red]LEAK at bar {leak.bar} ({leak.time}): {leak.detail}[/]")
        table.add_row(str(cut), *cells)
    return table
