"""``nexlify study``: the default pipeline in an anchored walk-forward over whole test years."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nexlify.commands import COMMAND_HELP
from nexlify.commands.meta import add_meta_flags, meta_spec
from nexlify.commands.options import (
    AGENT_OPTIONS,
    BACKEND_OPTIONS,
    DATA_OPTIONS,
    STRATEGY_OPTIONS,
    TRAIN_OPTIONS,
    VALIDATION_OPTIONS,
    option_help,
)
from nexlify.commands.rolling_options import add_rolling_flags, rolling_spec
from nexlify.commands.train import RichProgressSink, resolve_run_config, setup_logging
from nexlify.errors import ConfigError
from nexlify.pipeline.auto_retrain import attach_run_log
from nexlify.pipeline.backends import require_backend
from nexlify.pipeline.study import DEFAULT_YEARS, RESULTS_FILE, TABLE_FILE, StudySpec, run_study
from nexlify.pipeline.study_seeds import SEEDS_FILE, SEEDS_TABLE, run_seed_study
from nexlify.pipeline.study_stats import MODEL_ROWS
from nexlify.train.config import RunConfig, run_config_from_dict

DEFAULT_PAIRS = ("BTC/USDT", "ETH/USDT")
_SKIPPED = {"--data-dir", "--output-dir", "--test-days", "--source"}
"""Pipeline flags the study sets itself (the data folder, the run folders, no test days)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "study",
        help=COMMAND_HELP["study"],
        description="For each test year Y, the whole default pipeline (the same as `nexlify "
        "train`, or the --config given) trains and selects only on the candles before Y-01-01 "
        "(its validation window is the last --validation-days of that span); the final model "
        "then trades year Y once beside every baseline. The last year's model is also tested "
        "on the --venue folders given. Default pairs are BTC/USDT ETH/USDT: SOL/USDT's Binance "
        "history starts 2020-08, too short before 2021. Rerun the same command to continue an "
        "interrupted study: finished years are kept.",
    )
    parser.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="candle files of the study's venue (e.g. the Binance history)",
    )
    parser.add_argument(
        "--years",
        nargs="+",
        type=int,
        default=list(DEFAULT_YEARS),
        metavar="YEAR",
        help="test years (default 2021 2022 2023 2024)",
    )
    parser.add_argument(
        "--venue",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another venue the last year's model is tested on, e.g. "
        "kucoin=data/kucoin (repeatable)",
    )
    parser.add_argument(
        "--venue-name",
        metavar="NAME",
        help="name of --data-dir's venue (default: the folder's name)",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="results folder (default benchmarks/results/study/<config name>, "
        "<config name> = the --config file's stem or 'defaults')",
    )
    parser.add_argument(
        "--trials-file",
        metavar="FILE",
        help="registry of configurations tried (default study_trials.json "
        "beside the output folder)",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config of the pipeline studied")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        help="run the study once per base seed (each in <output>/seed_<SEED>/, at least 2 "
        "seeds whose pipelines share no training seed) and judge the configuration over them "
        "in <output>/seeds.md; instead of --seed",
    )
    add_rolling_flags(
        parser,
        "also trade each year on the study's venue with the final model fine-tuned every "
        "--retrain-every days and swapped in only when it beats the trading model on the "
        "latest --retrain-score-days, bars neither trained on",
    )
    parser.add_argument(
        "--meta-init",
        action="store_true",
        help="with --retrain-every: also trade each year from a Reptile meta-init trained on "
        "the year's training bars, adapted before the year and retrained on the schedule",
    )
    add_meta_flags(parser, "--meta-seed", "options of --meta-init (as nexlify meta-init's)")
    _add_pipeline_flags(parser)
    parser.add_argument(
        "--no-kelly", action="store_true", help="size every trade at --max-position"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging on the console")
    parser.set_defaults(handler=start_study)


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    """The pipeline's own flags, as ``train`` takes them (less those the study sets)."""
    for options in (
        DATA_OPTIONS,
        STRATEGY_OPTIONS,
        TRAIN_OPTIONS,
        VALIDATION_OPTIONS,
        BACKEND_OPTIONS,
        AGENT_OPTIONS,
    ):
        for flags, section, name, kwargs in options:
            if not set(flags) & _SKIPPED:
                shown = {**kwargs, "help": option_help(section, name, kwargs.get("help", ""))}
                parser.add_argument(*flags, dest=f"{section}__{name}", default=None, **shown)


def _venues(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ConfigError(f"--venue {item!r}: expected NAME=DIR, e.g. kucoin=data/kucoin")
        out[name.strip()] = folder.strip()
    return out


def study_spec(args: argparse.Namespace) -> StudySpec:
    data_dir = Path(args.data_dir)
    return StudySpec(
        data_dir=str(data_dir),
        years=tuple(args.years),
        venue=args.venue_name or data_dir.resolve().name,
        other_venues=_venues(args.venue),
        trials_file=args.trials_file,
        rolling=rolling_spec(args, "study"),
        meta=meta_spec(args) if args.meta_init else None,
    )


def output_dir(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    name = Path(args.config).stem if args.config else "defaults"
    return Path("benchmarks") / "results" / "study" / name


def _config_file_sets_pairs(path: str | None) -> bool:
    """Whether the --config file names its pairs (read after resolve_run_config validated it)."""
    if path is None:
        return False
    values = yaml.safe_load(Path(path).read_text()) or {}
    return bool((values.get("data") or {}).get("pairs"))


def resolved_study_config(args: argparse.Namespace) -> RunConfig:
    """The pipeline's config as ``train`` resolves it; pairs default to DEFAULT_PAIRS unless
    --pairs or the --config file names them."""
    config = resolve_run_config(args)
    if args.data__pairs is None and not _config_file_sets_pairs(args.config):
        config = run_config_from_dict({"data": {"pairs": list(DEFAULT_PAIRS)}}, config)
    return config


def start_study(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify study``."""
    config = resolved_study_config(args)
    require_backend(config.pipeline.backend)
    if args.seeds and args.pipeline__base_seed is not None:
        raise ConfigError("study: give either --seed or --seeds, not both")
    spec = study_spec(args)
    out_dir = output_dir(args)
    log = setup_logging(console, args.verbose)
    out_dir.mkdir(parents=True, exist_ok=True)
    attach_run_log(log, out_dir)
    columns = (
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TimeElapsedColumn(),
    )
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with Progress(*columns, console=console, transient=False) as bars:
            if args.seeds:
                summary = run_seed_study(config, spec, args.seeds, out_dir, log,
                                         RichProgressSink(bars))  # fmt: skip
            else:
                results = run_study(config, spec, out_dir, log, RichProgressSink(bars))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.seeds:
        console.print(_seeds_table(summary))
        console.print(f"results: {out_dir / SEEDS_FILE} and {out_dir / SEEDS_TABLE}")
        return 0
    console.print(_table(results))
    console.print(f"results: {out_dir / RESULTS_FILE} and {out_dir / TABLE_FILE}")
    return 0


def _table(results: dict[str, Any]) -> Table:
    tried = results["n_trials"]
    table = Table(
        title=f"Out-of-sample study ({tried} configuration{'' if tried == 1 else 's'} tried)"
    )
    for column in (
        "year",
        "venue",
        "model return %",
        "Sharpe",
        "best baseline Sharpe",
        "excess/day % [95% CI]",
        "deflated Sharpe",
    ):
        table.add_column(column)
    for year, entry in results["years"].items():
        for venue, cell in entry["venues"].items():
            best = max(
                row["sharpe"]
                for name, row in cell.items()
                if isinstance(row, dict) and "sharpe" in row and not name.startswith("model")
            )
            for policy in MODEL_ROWS:
                if policy in cell:
                    table.add_row(year, f"{venue}{_ROW_SUFFIX[policy]}",
                                  *_model_cells(cell[policy], best))  # fmt: skip
    return table


def _seeds_table(summary: dict[str, Any]) -> Table:
    """Per venue and model row: the seeds' pooled excess, the seed-averaged one, the verdict."""
    table = Table(title=f"Out-of-sample study over seeds {', '.join(map(str, summary['seeds']))}"
                  f" ({summary['n_trials']} configurations tried)")  # fmt: skip
    for column in ("venue", "pooled excess/day % per seed", "seed-averaged % [95% CI]",
                   "seeds meeting the target", "verdict"):  # fmt: skip
        table.add_column(column)
    for venue, policies in summary["venues"].items():
        for policy, row in policies.items():
            per_seed = ", ".join(f"{seed}: {r['pooled']['excess_daily_pct']:+.4f}"
                                 for seed, r in row["per_seed"].items())  # fmt: skip
            averaged = row["seed_averaged"]
            mean = "n/a"
            if averaged is not None:
                low, high = averaged["excess_daily_ci95_pct"]
                mean = f"{averaged['excess_daily_pct']:+.4f} [{low:+.4f}, {high:+.4f}]"
            verdict = ("holds up" if row["holds_up"] else "does not hold up") if row["complete"] \
                else "incomplete"  # fmt: skip
            meeting = f"{row['seeds_meeting_target']} of {len(row['per_seed'])}"
            table.add_row(f"{venue}{_ROW_SUFFIX[policy]}", per_seed, mean, meeting, verdict)
    return table


_ROW_SUFFIX = {"model": "", "model_rolling": " (rolling)", "model_meta_rolling": " (meta-init)"}


def _model_cells(model: dict[str, Any], best: float) -> list[str]:
    low, high = model["excess_daily_ci95_pct"]
    dsr = model.get("deflated_sharpe", {}).get("value")
    return [
        f"{model['total_return_pct']:+.2f}",
        f"{model['sharpe']:.2f}",
        f"{best:.2f}",
        f"{model['excess_daily_pct']:+.4f} [{low:+.4f}, {high:+.4f}]",
        "n/a" if dsr is None else f"{dsr:.3f}",
    ]


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the study like Ctrl-C: the interrupted year resumes on the next run."""
    raise KeyboardInterrupt
