"""``nexlify walk-forward``: rolling or anchored folds, out-of-sample results beside baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from nexlify.commands import COMMAND_HELP
from nexlify.commands.options import add_backend_options, add_data_options
from nexlify.commands.train import prepare_output_dir, resolve_run_config, setup_logging
from nexlify.errors import ConfigError
from nexlify.pipeline.auto_retrain import attach_run_log
from nexlify.pipeline.backends import require_backend
from nexlify.pipeline.data_choice import load_training_market
from nexlify.pipeline.walk_forward import WalkForwardSpec, run_walk_forward
from nexlify.report.tables import (
    excess_caption,
    excess_rows,
    exposure_caption,
    exposure_rows,
    policy_table,
)
from nexlify.train.config import replace_section

HEADLINE_ROWS = (
    ("total_return_pct", "return %", "+.2f"),
    ("sharpe", "Sharpe", ".2f"),
    ("max_drawdown_pct", "max DD %", ".2f"),
    ("win_rate", "win rate", ".2f"),
    ("n_trades", "trades", ".1f"),
)
"""The out-of-sample aggregates shown (``pipeline.walk_forward.HEADLINE``): key, title, format."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "walk-forward",
        help=COMMAND_HELP["walk-forward"],
        description="Each fold trains on its past (its last --fold-validation-days pick the "
        "checkpoint) and trades the following unseen --test-days once, beside the baselines.",
    )
    add_data_options(parser)
    parser.add_argument("--train-days", type=float, default=365.0, help="training span (365)")
    parser.add_argument("--test-days-per-fold", dest="fold_test_days", type=float, default=60.0,
                        help="test span of each fold (60)")  # fmt: skip
    parser.add_argument("--step-days", type=float, default=None, help="shift between folds")
    parser.add_argument("--embargo-days", type=float, default=1.0, help="train/test gap (1)")
    parser.add_argument("--mode", choices=["rolling", "anchored"], default="rolling")
    parser.add_argument(
        "--fold-validation-days",
        type=float,
        default=30.0,
        help="last days of each training span that pick the checkpoint (30)",
    )
    parser.add_argument("--episodes", type=int, default=100, help="training episodes per fold")
    parser.add_argument("--folds", type=int, default=None, help="use only the first N folds")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="folds trained at once (default 0 = automatic; 1 = in-process)",
    )
    add_backend_options(parser)
    parser.add_argument("--output-dir", default="walk_forward_output", help="output folder")
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(handler=start_walk_forward)


def start_walk_forward(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify walk-forward``."""
    if args.episodes < 1:
        raise ConfigError(f"--episodes: {args.episodes} is invalid (an integer >= 1)")
    config = resolve_run_config(args)
    if args.workers is not None:
        config = replace_section(config, "pipeline", workers=args.workers)
    require_backend(config.pipeline.backend)
    spec = WalkForwardSpec(
        train_days=args.train_days, test_days=args.fold_test_days, step_days=args.step_days,
        embargo_days=args.embargo_days, mode=args.mode,
        validation_days=args.fold_validation_days, episodes=args.episodes, max_folds=args.folds,
    )  # fmt: skip
    log = setup_logging(console, args.verbose)
    market = load_training_market(config.data, log)
    out_dir = Path(args.output_dir)
    prepare_output_dir(out_dir)
    attach_run_log(log, out_dir)
    summary = run_walk_forward(config, market, spec, out_dir, log)
    policies = list(summary["out_of_sample"])
    rows = [
        (f"mean {title}", [format(summary["out_of_sample"][p][f"mean_{key}"], fmt)
                           for p in policies])
        for key, title, fmt in HEADLINE_ROWS
    ]  # fmt: skip
    excess = summary["excess_daily_return"]
    exposure = summary["market_exposure"]
    table = policy_table(
        f"Walk-forward ({spec.mode}, {len(summary['folds'])} folds), out of sample",
        policies,
        rows + excess_rows(excess, policies) + exposure_rows(exposure, policies),
        "means over folds; "
        + excess_caption(excess["model"]["method"])
        + " (all test days)"
        + exposure_caption(exposure),
    )
    console.print(table)
    return 0
