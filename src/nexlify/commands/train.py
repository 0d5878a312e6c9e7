"""``nexlify train``: resolve the config, pick the data, run the pipeline, write the outputs."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nexlify.commands.options import overrides_from_args
from nexlify.commands.preflight import run_and_report
from nexlify.config.strategies import STAKING_DEFAULTS, StrategiesConfig
from nexlify.errors import ConfigError
from nexlify.evaluation.edge import describe_edge
from nexlify.pipeline.auto_retrain import (
    SUMMARY_FILE,
    attach_run_log,
    check_resumable,
    pipeline_workers,
    run_pipeline,
)
from nexlify.pipeline.backends import prestart_workers
from nexlify.pipeline.data_choice import load_training_market
from nexlify.train.config import RunConfig, load_run_config, run_config_from_dict
from nexlify.train.tensorboard import require_tensorboard
from nexlify.train.trainer import resolve_device

QUICK_TEST: dict[str, dict[str, Any]] = {
    "pipeline": {"initial_runs": 2, "max_iterations": 3, "initial_episodes": 16,
                 "retrain_episodes": 8},
    "train": {"eval_every": 8},
    "agent": {"learning_starts": 1000},
    "data": {"synthetic_days": 400},
}  # fmt: skip
"""What ``--quick-test`` changes (explicit flags still win); it also keeps one pair
(:func:`quick_test_pair`), or the first two with ``--cross-pair``, which compares pairs."""

MARKET_SECTIONS = ("risk", "execution", "env")


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """Config file, then --quick-test, then explicit flags; validated, errors name the field."""
    config = load_run_config(args.config) if getattr(args, "config", None) else RunConfig()
    quick = getattr(args, "quick_test", False)
    if quick:
        config = run_config_from_dict(QUICK_TEST, config)
    flags = overrides_from_args(args)
    nested: dict[str, Any] = {}
    for section, values in flags.items():
        if section in MARKET_SECTIONS:  # risk, execution, env live inside market
            nested.setdefault("market", {})[section] = values
        else:  # merged, so the order of the sections does not matter
            nested.setdefault(section, {}).update(values)
    if nested:
        config = run_config_from_dict(nested, config)
    if quick:  # after the flags, so that --pairs, --strategies and --cross-pair are known
        pairs = (
            list(config.data.pairs[:2])  # cross-pair features need two (the check says so)
            if config.data.cross_pair
            else [quick_test_pair(config.data.pairs, config.market.strategies)]
        )
        config = run_config_from_dict({"data": {"pairs": pairs}}, config)
    return config


def quick_test_pair(pairs: tuple[str, ...], strategies: StrategiesConfig) -> str:
    """The one pair ``--quick-test`` keeps: the first the enabled strategies can use (staking
    needs a base with staking defaults or the configured asset, lending a configured base, an
    explicit liquidity pair itself), else the first; the strategies' own checks then explain."""

    def usable(pair: str) -> bool:
        base, quote = (part.upper() for part in pair.split("/", 1))
        if strategies.uses("staking"):
            asset = strategies.staking.asset.upper()
            if base != asset and not (asset == "AUTO" and base in STAKING_DEFAULTS):
                return False
        lent = strategies.lending.asset.upper()
        if strategies.uses("lending") and lent not in ("QUOTE", base, quote):
            return False
        if strategies.uses("liquidity"):
            return strategies.liquidity.pair in ("auto", pair)
        return True

    return next((pair for pair in pairs if usable(pair)), pairs[0])


RESUMABLE_FLAGS = {
    ("pipeline", "workers"),
    ("pipeline", "share_cores"),
    ("pipeline", "backend"),
    ("pipeline", "ray_address"),
}
"""Flags ``--resume`` accepts: they change how the run executes, not its results."""


def resume_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The saved config of the run in ``--resume RUN_DIR`` (with execution flags applied)."""
    run_dir = Path(args.resume)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: no pipeline run here ({saved} does not exist)")
    flags = overrides_from_args(args)
    changed = sorted(
        f"{section}.{name}"
        for section, values in flags.items()
        for name in values
        if (section, name) not in RESUMABLE_FLAGS
    )
    if changed or getattr(args, "config", None) or getattr(args, "quick_test", False):
        given = changed + [o for o in ("--config", "--quick-test")
                           if getattr(args, o[2:].replace("-", "_"), None)]  # fmt: skip
        raise ConfigError(
            f"--resume continues a run with its saved config ({saved}); these would change "
            f"its results: {', '.join(given)} (start a new run instead)"
        )
    config = load_run_config(saved)
    execution = flags.get("pipeline", {})  # only execution flags are left (checked above)
    config = run_config_from_dict({"pipeline": {**execution, "output_dir": str(run_dir)}}, config)
    return config, run_dir


def prepare_output_dir(path: Path) -> str | None:
    """Create the output folder; an earlier run found there is moved aside, never overwritten."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output-dir {path}: exists and is not a directory")
    moved = None
    if path.is_dir() and any(path.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(path.stat().st_mtime))
        target = path.with_name(f"{path.name}.previous-{stamp}")
        k = 1
        while target.exists():
            k += 1
            target = path.with_name(f"{path.name}.previous-{stamp}-{k}")
        path.rename(target)
        moved = str(target)
    path.mkdir(parents=True, exist_ok=True)
    return moved


def setup_logging(console: Console, verbose: bool) -> logging.Logger:
    """Log to the console (the pipeline adds ``training.log`` once the output folder exists)."""
    log = logging.getLogger("nexlify")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    rich_handler = RichHandler(console=console, show_path=False, markup=False)
    rich_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.addHandler(rich_handler)
    log.propagate = False
    return log


def _plan_table(config: RunConfig) -> Table:
    p, r, d = config.pipeline, config.market.risk, config.data
    table = Table(title="Nexlify training plan", show_header=False)
    rows = [
        ("pairs / timeframe", f"{', '.join(d.pairs)} / {d.timeframe}"),
        ("data", d.data_dir or d.source),
        ("initial runs", f"{p.initial_runs} x {p.initial_episodes} episodes"),
        ("retraining", f"up to {p.max_iterations} x {p.retrain_episodes} episodes, patience "
                       f"{p.patience}, threshold {p.improvement_threshold}%"),
        ("risk", f"SL {r.stop_loss:.1%} TP {r.take_profit:.1%} trail {r.trailing_stop:.1%} "
                 f"max pos {r.max_position:.1%} max trades {r.max_concurrent_trades} "
                 f"Kelly {'on' if r.use_kelly else 'off'}"),
        ("output", p.output_dir),
    ]  # fmt: skip
    for key, value in rows:
        table.add_row(key, value)
    return table


class RichProgressSink:
    """One progress bar per training unit (initial run or retraining iteration).

    A unit that is over stops its bar's clock; one that stopped early (its total lowered to
    what it did, see :data:`~nexlify.train.trainer.ProgressCallback`) keeps the planned total
    and says so, instead of sitting at e.g. 216/300 as if still running.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.planned: dict[str, int] = {}

    def update(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
            self.planned[label] = total
        task = self.tasks[label]
        planned = self.planned[label]
        if done < total:
            self.progress.update(task, completed=done, total=total)
            return
        if total < planned:  # early stopping ended the unit before its planned episodes
            what = f"{label} stopped early at {done}/{planned} (patience)"
        else:
            what = f"{label} done"
        self.progress.update(task, completed=done, total=planned, description=what)
        self.progress.stop_task(task)


def uses_worker_processes(config: RunConfig) -> bool:
    """Whether the pipeline will train units in local worker processes (then their fork
    server is started first thing, :func:`~nexlify.pipeline.backends.prestart_workers`)."""
    pcfg = config.pipeline
    pooled = pipeline_workers(pcfg) > 1 or pcfg.validation == "walk-forward"
    return pcfg.backend == "process" and pooled


def start_train(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify train``."""
    resume = getattr(args, "resume", None) is not None
    config, _ = resume_config(args) if resume else (resolve_run_config(args), None)
    if uses_worker_processes(config):
        prestart_workers()  # imports while the checks and the data loading below run
    run_and_report(config, console)  # pre-flight: a failed check stops here (exit 2 or 3)
    resolve_device(config.train.device)  # an unavailable device is refused before any work
    if config.train.tensorboard:
        require_tensorboard()  # says how to install it, before any work
    console.print(_plan_table(config))
    if not args.automated and sys.stdin.isatty():
        answer = console.input("Start training? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            console.print("cancelled")
            return 1
    log = setup_logging(console, args.verbose)
    market = load_training_market(config.data, log)  # bad data fails here, before any output
    out_dir = Path(config.pipeline.output_dir)
    if resume:
        check_resumable(out_dir, market)  # other data: refused before any work
        attach_run_log(log, out_dir)
    else:
        moved = prepare_output_dir(out_dir)
        attach_run_log(log, out_dir)
        if moved:
            log.warning("the earlier run in %s was moved to %s", out_dir, moved)
    columns = (TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("episodes"), TimeElapsedColumn())  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with Progress(*columns, console=console, transient=False) as bars:
            summary = run_pipeline(config, market, log, out_dir, RichProgressSink(bars),
                                   resume=resume)  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(
        f"[bold green]done[/]: final score {summary['final_best_score']:.3f} "
        f"({summary['stop_reason']}); summary {out_dir / SUMMARY_FILE}; "
        f"model {summary['final_model_path']}",
        highlight=False,
    )
    if summary["data_source"] == "synthetic":
        console.print("[bold yellow]trained on the SYNTHETIC market (no real data given)[/]")
    edge = summary.get("edge") or {}
    verdict = describe_edge(edge) if edge else "NO EDGE SHOWN: the edge test did not run"
    style = "bold green" if edge.get("found") else "bold red"
    console.print(f"[{style}]{escape(verdict)}[/]", highlight=False)
    return 0


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: cleanly, resumable."""
    raise KeyboardInterrupt
