"""``nexlify preflight``: is this machine and config ready to train? (also run by ``train``)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from nexlify.commands import COMMAND_HELP
from nexlify.commands.options import add_train_options
from nexlify.commands.preflight_checks import (
    FAIL,
    PASS,
    CheckResult,
    raise_on_failure,
    run_preflight,
)
from nexlify.train.config import RunConfig

_STYLE = {PASS: "[green]pass[/]", "warn": "[yellow]warn[/]", FAIL: "[bold red]FAIL[/]"}


def register(sub: Any) -> None:
    """Add ``preflight`` to the ``nexlify`` parser's subparsers (takes train's options)."""
    parser = sub.add_parser("preflight", help=COMMAND_HELP["preflight"])
    add_train_options(parser)
    parser.set_defaults(handler=start_preflight)


def preflight_table(results: list[CheckResult]) -> Table:
    table = Table(title="Pre-flight checks")
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(r.name, _STYLE.get(r.status, r.status), r.detail)
    return table


def run_and_report(config: RunConfig, console: Console) -> list[CheckResult]:
    """Run the checks, print the table, raise on a fail (ConfigError exit 2 / DataError exit 3)."""
    results = run_preflight(config)
    console.print(preflight_table(results))
    raise_on_failure(results)
    return results


def start_preflight(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify preflight``."""
    from nexlify.commands.train import resolve_run_config

    run_and_report(resolve_run_config(args), console)
    console.print("[bold green]ready to train[/]")
    return 0
