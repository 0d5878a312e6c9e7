"""One registry of command-line options, shared by every command that needs them.

Defaults are ``None`` here on purpose: a flag that is not given leaves the config file's value
(or the dataclass default) in place, so ``--config`` and flags compose.
"""

from __future__ import annotations

import argparse
from typing import Any

from nexlify.config import TIMEFRAMES
from nexlify.train.config import SOURCES

# (flags, section, field, argparse kwargs)
DATA_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--pairs",), "data", "pairs",
     {"nargs": "+", "metavar": "PAIR", "help": "pairs in ccxt form, e.g. BTC/USDT ETH/USDT"}),
    (("--timeframe",), "data", "timeframe",
     {"choices": list(TIMEFRAMES), "help": "candle timeframe (default 1h)"}),
    (("--data-dir",), "data", "data_dir",
     {"metavar": "DIR", "help": "folder of <BASE>_<QUOTE>-<tf>.{parquet,feather,csv} files"}),
    (("--source",), "data", "source",
     {"choices": list(SOURCES), "help": "where candles come from (default auto: --data-dir, "
      "else the local store, else the synthetic market)"}),
    (("--validation-days",), "data", "validation_days",
     {"type": float, "metavar": "DAYS", "help": "held-out validation days (default 90)"}),
    (("--test-days",), "data", "test_days",
     {"type": float, "metavar": "DAYS", "help": "days at the end, never used (default 0)"}),
    (("--synthetic-seed",), "data", "synthetic_seed",
     {"type": int, "metavar": "SEED", "help": "seed of the synthetic market (default 0)"}),
    (("--stop-loss",), "risk", "stop_loss",
     {"type": float, "metavar": "FRAC", "help": "stop-loss below entry (default 0.02)"}),
    (("--take-profit",), "risk", "take_profit",
     {"type": float, "metavar": "FRAC", "help": "take-profit above entry (default 0.05)"}),
    (("--trailing-stop",), "risk", "trailing_stop",
     {"type": float, "metavar": "FRAC", "help": "trailing stop below the high (default 0.03)"}),
    (("--max-position",), "risk", "max_position",
     {"type": float, "metavar": "FRAC", "help": "largest position, of equity (default 0.05)"}),
    (("--max-trades",), "risk", "max_concurrent_trades",
     {"type": int, "metavar": "N", "help": "most open positions (default 3)"}),
    (("--daily-loss-limit",), "risk", "daily_loss_limit",
     {"type": float, "metavar": "FRAC", "help": "daily loss limit (default 0.05)"}),
    (("--fee",), "execution", "fee_rate",
     {"type": float, "metavar": "FRAC", "help": "taker fee per side (default 0.001)"}),
    (("--slippage-bps",), "execution", "slippage_bps",
     {"type": float, "metavar": "BPS", "help": "slippage per fill, basis points (default 5)"}),
    (("--episode-length",), "env", "episode_length",
     {"type": int, "metavar": "BARS", "help": "bars per episode (default 720)"}),
]  # fmt: skip

TRAIN_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--initial-runs",), "pipeline", "initial_runs",
     {"type": int, "metavar": "N", "help": "independent runs in phase 1 (default 3)"}),
    (("--initial-episodes",), "pipeline", "initial_episodes",
     {"type": int, "metavar": "N", "help": "episodes per initial run (default 300)"}),
    (("--retrain-episodes",), "pipeline", "retrain_episodes",
     {"type": int, "metavar": "N", "help": "episodes per retraining iteration (default 200)"}),
    (("--improvement-threshold",), "pipeline", "improvement_threshold",
     {"type": float, "metavar": "PCT", "help": "a new best improving less than this percent "
      "ends retraining (default 1.0)"}),
    (("--patience",), "pipeline", "patience",
     {"type": int, "metavar": "N", "help": "iterations with no new best (default 3)"}),
    (("--max-iterations",), "pipeline", "max_iterations",
     {"type": int, "metavar": "N", "help": "most retraining iterations (default 10)"}),
    (("--seed",), "pipeline", "base_seed",
     {"type": int, "metavar": "SEED", "help": "seed of the first run (default 42, then +1000)"}),
    (("--workers",), "pipeline", "workers",
     {"type": int, "metavar": "N", "help": "initial runs trained at once in separate processes "
      "(default 0 = one per core; 1 = in-process)"}),
    (("--output-dir",), "pipeline", "output_dir",
     {"metavar": "DIR", "help": "output folder (default complete_auto_training_output)"}),
    (("--num-envs",), "train", "num_envs",
     {"type": int, "metavar": "N", "help": "envs collecting experience at once (default 8)"}),
    (("--eval-every",), "train", "eval_every",
     {"type": int, "metavar": "EPISODES", "help": "validate every N episodes (default 50)"}),
    (("--device",), "train", "device",
     {"metavar": "DEV", "help": "auto, cpu, cuda, cuda:N or mps (default auto)"}),
]  # fmt: skip


def _add(parser: argparse.ArgumentParser, options: list[Any]) -> None:
    for flags, section, name, kwargs in options:
        parser.add_argument(*flags, dest=f"{section}__{name}", default=None, **kwargs)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Market, risk and cost options."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (flags override it)")
    _add(parser, DATA_OPTIONS)
    parser.add_argument(
        "--no-kelly", action="store_true", help="size every trade at --max-position"
    )


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Everything ``train`` takes (the original tool's flags plus Nexlify's)."""
    add_data_options(parser)
    _add(parser, TRAIN_OPTIONS)
    parser.add_argument(
        "--quick-test",
        action="store_true",
        help="1 pair, 2 initial runs, 3 max iterations, few episodes (about two minutes)",
    )
    parser.add_argument("--automated", action="store_true", help="no prompts; run with defaults")
    parser.add_argument("--verbose", action="store_true", help="debug logging on the console")


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Flag values that were given, as {section: {field: value}} (None = not given)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "__" not in key or value is None:
            continue
        section, name = key.split("__", 1)
        out.setdefault(section, {})[name] = value
    if getattr(args, "no_kelly", False):
        out.setdefault("risk", {})["use_kelly"] = False
    return out
