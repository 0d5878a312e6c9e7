"""``nexlify meta-init``: a Reptile meta-initialisation from windows of the training candles."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from rich.console import Console

from nexlify.commands import COMMAND_HELP
from nexlify.commands.options import (
    AGENT_OPTIONS,
    DATA_OPTIONS,
    TRAIN_OPTIONS,
    option_help,
)
from nexlify.commands.train import resolve_run_config, setup_logging
from nexlify.data.candles import parse_dates, read_raw_table, resolve_columns
from nexlify.data.enrichment import with_external_features
from nexlify.data.market_data import MarketData, build_market_data
from nexlify.data.quality import load_checked_pairs, quality_notes
from nexlify.data.resample import find_candle_source
from nexlify.errors import ConfigError, DataError
from nexlify.pipeline.data_choice import (
    checked_market_from_files,
    external_folder,
    quality_policy,
    run_features,
)
from nexlify.pipeline.meta import MetaSpec, check_task_markets, reptile, save_meta_init
from nexlify.pipeline.meta import training_bars as pipeline_training_bars
from nexlify.pipeline.runs import set_threads
from nexlify.train.config import RunConfig
from nexlify.train.trainer import resolve_device

_SKIPPED = {"--data-dir", "--source", "--synthetic-seed"}
"""Data flags the command sets itself (candles come from --data-dir only)."""
_TRAIN_FLAGS = {
    "--num-envs",
    "--device",
    "--augment",
    "--augment-price-jitter",
    "--augment-time-shift",
    "--augment-volume-scale",
    "--augment-regime-mix",
}
"""Training flags that act on the inner loop (the rest act on the pipeline, not here)."""
_CUT_SLACK = pd.Timedelta(days=1)
"""--before may be this far after the last candle (a cut at the next midnight cuts nothing)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "meta-init",
        help=COMMAND_HELP["meta-init"],
        description="Reptile (first-order meta-learning): for each outer step, train a copy of "
        "the meta-weights for a few episodes on a random window of the training candles, then "
        "move the meta-weights part of the way toward the result. Writes an ordinary model "
        "file, usable where a training run starts from a model. Tasks never reach the last "
        "--validation-days (and --test-days) before --before: the window a pipeline selects on.",
    )
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="candle files of the venue the meta-init is for")  # fmt: skip
    parser.add_argument("--venue", action="append", default=[], metavar="NAME=DIR",
                        help="another venue's candle folder (same pairs) to draw tasks from "
                        "(repeatable)")  # fmt: skip
    parser.add_argument(
        "--before",
        metavar="YYYY-MM-DD",
        help="use only candles before this date (UTC), on every venue",
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="model file to write")
    parser.add_argument("--config", metavar="FILE", help="YAML config (flags override it)")
    add_meta_flags(parser)
    for flags, section, name, kwargs in (*DATA_OPTIONS, *TRAIN_OPTIONS, *AGENT_OPTIONS):
        if set(flags) & _SKIPPED or (section in ("train", "pipeline")
                                     and not set(flags) & _TRAIN_FLAGS):  # fmt: skip
            continue
        shown = {**kwargs, "help": option_help(section, name, kwargs.get("help", ""))}
        parser.add_argument(*flags, dest=f"{section}__{name}", default=None, **shown)
    parser.add_argument("--no-kelly", action="store_true", help="size every trade at "
                        "--max-position")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="debug logging on the console")
    parser.set_defaults(handler=start_meta_init)


def add_meta_flags(
    parser: argparse.ArgumentParser, seed_flag: str = "--seed", description: str | None = None
) -> None:
    """The Reptile options (``seed_flag`` names the meta seed: ``--meta-seed`` where ``--seed``
    is the pipeline's)."""
    d = MetaSpec()
    group = parser.add_argument_group("meta-learning", description)
    group.add_argument(
        "--outer-steps",
        type=int,
        default=d.outer_steps,
        metavar="N",
        help=f"tasks drawn, one Reptile update each (default {d.outer_steps})",
    )
    group.add_argument(
        "--inner-episodes",
        type=int,
        default=d.inner_episodes,
        metavar="N",
        help=f"training episodes on each task (default {d.inner_episodes})",
    )
    group.add_argument(
        "--task-days",
        type=float,
        default=d.task_days,
        metavar="DAYS",
        help=f"days of candles in a task window (default {d.task_days:g})",
    )
    group.add_argument(
        "--meta-step-start",
        type=float,
        default=d.meta_step_start,
        metavar="EPS",
        help=f"meta step size of the first outer step (default {d.meta_step_start:g})",
    )
    group.add_argument(
        "--meta-step-end",
        type=float,
        default=d.meta_step_end,
        metavar="EPS",
        help=f"meta step size of the last outer step (default {d.meta_step_end:g})",
    )
    group.add_argument(seed_flag, dest="meta_seed", type=int, default=d.seed, metavar="S",
                       help=f"seed of the tasks, the initial weights and the inner loops "
                       f"(default {d.seed})")  # fmt: skip


def meta_spec(args: argparse.Namespace) -> MetaSpec:
    return MetaSpec(outer_steps=args.outer_steps, inner_episodes=args.inner_episodes,
                    task_days=args.task_days, meta_step_start=args.meta_step_start,
                    meta_step_end=args.meta_step_end, seed=args.meta_seed)  # fmt: skip


def parse_before(text: str | None) -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        cut = pd.Timestamp(text)
    except ValueError:
        raise ConfigError(f"meta-init --before {text!r}: not a date (YYYY-MM-DD)") from None
    return cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")


def candle_span(folder: str, pair: str, timeframe: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last open time in a pair's candle file (read raw, before any check)."""
    path, _ = find_candle_source(folder, pair, timeframe)
    table, date_col, _ = resolve_columns(read_raw_table(path), str(path))
    ns, ok, _ = parse_dates(table[date_col])
    if not ok.any():
        raise DataError(f"{path}: no readable candle times")
    valid = ns[ok]
    return pd.Timestamp(int(valid.min()), tz="UTC"), pd.Timestamp(int(valid.max()), tz="UTC")


def check_cut(config: RunConfig, folder: str, venue: str, before: pd.Timestamp) -> None:
    """--before must fall inside every pair's candles (or just after the last one)."""
    for pair in config.data.pairs:
        first, last = candle_span(folder, pair, config.data.timeframe)
        if not first < before <= last + _CUT_SLACK:
            raise DataError(
                f"meta-init --before {before:%Y-%m-%d}: outside the candles of {pair} on venue "
                f"{venue} ({folder}: {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M})"
            )


def venue_market(
    config: RunConfig, folder: str, venue: str, before: pd.Timestamp | None
) -> MarketData:
    """A venue's market as the pipeline builds it; with ``before``, the files are cut there
    before any check, repair or feature sees a later bar (as the study cuts them)."""
    where = f"meta-init venue {venue}"
    if not Path(folder).is_dir():
        raise DataError(f"{where}: {folder!r} does not exist or is not a directory")
    try:
        if before is None:
            return with_externals(checked_market_from_files(folder, config.data), config)
        check_cut(config, folder, venue, before)
        frames, reports = load_checked_pairs(
            folder, list(config.data.pairs), config.data.timeframe, quality_policy(config.data),
            before,
        )  # fmt: skip
        market = build_market_data(
            frames, config.data.timeframe, source=f"files:{folder}",
            extra_notes=(*quality_notes(reports), f"meta-init: candles cut before "
                         f"{before:%Y-%m-%d}"),
            features=run_features(config.data),
        )  # fmt: skip
        return with_externals(market, config)
    except DataError as exc:
        message = str(exc)
        raise DataError(message if message.startswith(where) else f"{where}: {message}") from None


def with_externals(market: MarketData, config: RunConfig) -> MarketData:
    """``market`` with the external daily series the config asks for, as the pipeline adds
    them (lagged, no look-ahead)."""
    data = config.data
    if not data.external:
        return market
    return with_external_features(
        market, data.external, external_folder(data), data.external_max_age_days
    )


def training_markets(
    config: RunConfig, folders: dict[str, str], before: pd.Timestamp | None
) -> dict[str, MarketData]:
    """Each venue's training bars (less the validation and test days at the end)."""
    out = {}
    for venue, folder in folders.items():
        market = venue_market(config, folder, venue, before)
        try:
            out[venue] = pipeline_training_bars(market, config)
        except DataError as exc:
            raise DataError(f"meta-init venue {venue}: {exc}") from None
    return out


def start_meta_init(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify meta-init``: every check before any training."""
    spec = meta_spec(args)
    config = resolve_run_config(args)
    before = parse_before(args.before)
    resolve_device(config.train.device)  # an unavailable device is refused before the data
    output = Path(args.output)
    if output.is_dir():
        raise ConfigError(f"meta-init --output {output}: is a directory; give a file name")
    data_dir = Path(args.data_dir)
    folders = {data_dir.resolve().name: str(data_dir)}
    for item in args.venue:
        name, sep, folder = (part.strip() for part in item.partition("="))
        if not sep or not name or not folder:
            raise ConfigError(f"meta-init --venue {item!r}: expected NAME=DIR, e.g. kucoin=DIR")
        if name in folders:
            raise ConfigError(f"meta-init --venue {name}: the name is used twice")
        folders[name] = folder
    markets = training_markets(config, folders, before)
    check_task_markets(markets, config, spec)
    log = setup_logging(console, args.verbose)
    set_threads(config.train.torch_threads)
    result = reptile(markets, config, spec, log=log)
    output.parent.mkdir(parents=True, exist_ok=True)
    target = next(iter(markets.values()))
    save_meta_init(output, result, config, target, spec)
    console.print(
        f"[bold green]done[/]: meta-init of {spec.outer_steps} outer steps x "
        f"{spec.inner_episodes} episodes in {result.seconds:.1f} s -> {output}",
        highlight=False,
    )
    return 0
