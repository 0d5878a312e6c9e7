"""``nexlify report RUN_DIR``: rebuild a pipeline run's self-contained HTML report."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from nexlify.commands import COMMAND_HELP
from nexlify.errors import DataError
from nexlify.pipeline.data_choice import load_training_market
from nexlify.report.html import build_run_report
from nexlify.run_layout import SUMMARY_FILE
from nexlify.train.config import run_config_from_dict


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help=COMMAND_HELP["report"],
        description="Re-runs the final model and the baselines on the run's validation window "
        "and writes RUN_DIR/report.html (self-contained: opens offline).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training output folder")
    parser.set_defaults(handler=start_report)


def load_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{run_dir}: no {SUMMARY_FILE}; is this a training output folder?"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict) or not summary.get("pipeline_complete"):
        raise DataError(f"{path}: the run did not complete; there is nothing to report yet")
    return summary


def start_report(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify report``."""
    run_dir = Path(args.run_dir)
    summary = load_summary(run_dir)
    config = run_config_from_dict(summary["config"])
    market = load_training_market(config.data, logging.getLogger("nexlify"))
    path = build_run_report(run_dir, summary, market)
    console.print(f"report written: {path}")
    return 0
