"""``nexlify report RUN_DIR``: rebuild a pipeline run's self-contained HTML report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from nexlify.commands import COMMAND_HELP
from nexlify.errors import DataError
from nexlify.pipeline.auto_retrain import SUMMARY_FILE
from nexlify.report.html import build_run_report


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help=COMMAND_HELP["report"],
        description="Re-runs the final model and the baselines on the run's validation window "
        "and writes RUN_DIR/report.html (self-contained: opens offline).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training output folder")
    parser.set_defaults(handler=start_report)


def load_summary(run_dir: Path) -> dict[str, object]:
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
    path = build_run_report(run_dir, load_summary(run_dir))
    console.print(f"report written: {path}")
    return 0
