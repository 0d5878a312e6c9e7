"""``nexlify tune``: Optuna search over the agent's (and optionally the risk) settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from nexlify.commands import COMMAND_HELP
from nexlify.commands.options import (
    add_backend_options,
    add_data_options,
    add_validation_options,
)
from nexlify.commands.train import resolve_run_config, setup_logging
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError
from nexlify.io import atomic_write_json
from nexlify.pipeline.auto_retrain import validation_folds
from nexlify.pipeline.backends import require_backend
from nexlify.pipeline.data_choice import load_training_market, split_market
from nexlify.pipeline.tune import TuneJob, run_tuning


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tune",
        help=COMMAND_HELP["tune"],
        description="Each trial trains one run and is scored on the held-out validation window; "
        "weak trials are pruned; the study is stored (SQLite by default) and resumes when run "
        "again with the same --study; the best settings are written as a --config file.",
    )
    add_data_options(parser)
    add_validation_options(parser)
    parser.add_argument("--trials", type=int, default=20, help="trials to run now (20)")
    parser.add_argument("--episodes", type=int, default=60, help="training episodes per trial")
    parser.add_argument("--study", default="nexlify", help="study name (nexlify)")
    parser.add_argument("--storage", default=None,
                        help="database URL (default sqlite:///OUTPUT_DIR/tuning.db)")  # fmt: skip
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="trials at once: the sampler proposes this many together (1; the "
        "same --seed and --workers give the same study on every backend)",
    )
    add_backend_options(parser)
    parser.add_argument("--tune-risk", action="store_true", help="also search the risk rules")
    parser.add_argument("--seed", type=int, default=42, help="sampler seed (42)")
    parser.add_argument("--output-dir", default="tuning_output", help="output folder")
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(handler=start_tune)


def start_tune(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify tune``."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("nexlify tune needs Optuna: pip install 'nexlify[tune]'") from None
    if args.episodes < 1 or args.workers < 1:
        raise ConfigError("--episodes and --workers must be >= 1")
    config = resolve_run_config(args)
    require_backend(config.pipeline.backend)
    log = setup_logging(console, args.verbose)
    market = load_training_market(config.data, log)
    train, val, _ = split_market(market, config.data)
    folds: tuple[tuple[MarketData, MarketData], ...] = ()
    if config.pipeline.validation == "walk-forward":
        folds = tuple((f.train, f.val) for f in validation_folds(market, config))
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # a study is resumed, never replaced
    storage = args.storage or f"sqlite:///{(out_dir / 'tuning.db').resolve()}"
    job = TuneJob(base=config.to_dict(), train_data=train, val_data=val, storage=storage,
                  study_name=args.study, episodes=args.episodes, trials=args.trials,
                  tune_risk=args.tune_risk, seed=args.seed, backend=config.pipeline.backend,
                  ray_address=config.pipeline.ray_address, folds=folds)  # fmt: skip
    summary = run_tuning(job, args.workers, out_dir)
    atomic_write_json(out_dir / "tuning_summary.json", summary)
    console.print(
        f"best score {summary['best_score']:.3f} after {summary['completed']} completed "
        f"trials ({summary['pruned']} pruned); config: {summary['best_config']}"
    )
    return 0
