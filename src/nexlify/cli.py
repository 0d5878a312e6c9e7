"""The ``nexlify`` command: one handler per subcommand, errors mapped to exit codes.

nexlify train [options]      the training pipeline (same flags as the root script)
nexlify baselines [options]  buy-and-hold, SMA crossover and random, with metrics
nexlify ablate [options]     full config vs each Rainbow/training component removed
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from rich.console import Console

from nexlify.errors import InterruptedRunError, NexlifyError


def build_parser() -> argparse.ArgumentParser:
    # The commands import torch and the rest (seconds): imported here, after run() had the
    # chance to start the worker processes' imports beside them.
    from nexlify.commands import audit as audit_command
    from nexlify.commands import backtest as backtest_command
    from nexlify.commands import data as data_command
    from nexlify.commands import paper as paper_command
    from nexlify.commands import preflight as preflight_command
    from nexlify.commands import report as report_command
    from nexlify.commands import tune as tune_command
    from nexlify.commands import walk_forward as walk_forward_command
    from nexlify.commands.ablate import add_ablate_options, start_ablate
    from nexlify.commands.baselines import start_baselines
    from nexlify.commands.options import add_data_options, add_train_options
    from nexlify.commands.train import start_train

    parser = argparse.ArgumentParser(
        prog="nexlify",
        description="Reinforcement-learning trading agents for crypto spot markets.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="multi-start training, selection on validation data, auto-retraining",
        description="Train several agents from different seeds, pick the best on held-out "
        "validation data, then retrain from it until the score plateaus.",
    )
    add_train_options(train)
    train.set_defaults(handler=start_train)

    baselines = sub.add_parser(
        "baselines",
        help="run the baseline policies through the simulator and print their metrics",
    )
    add_data_options(baselines)
    baselines.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    baselines.set_defaults(handler=start_baselines)

    ablate = sub.add_parser(
        "ablate",
        help="train the full config and each component removed in turn; IQM + bootstrap table",
    )
    add_data_options(ablate)
    add_ablate_options(ablate)
    ablate.set_defaults(handler=start_ablate)
    backtest_command.register(sub)
    audit_command.register(sub)
    report_command.register(sub)
    walk_forward_command.register(sub)
    tune_command.register(sub)
    data_command.register(sub)
    paper_command.register(sub)
    preflight_command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nexlify`` command; returns the exit code (130 after Ctrl-C).

    A second Ctrl-C while the first is being handled (the run saving its state, the message
    being printed) still ends with 130 and a message, not a traceback and death by SIGINT.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return InterruptedRunError.exit_code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    if args.version:
        import nexlify

        print(nexlify.__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args, console))
    except NexlifyError as exc:
        logging.getLogger("nexlify").debug("error", exc_info=True)
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return InterruptedRunError.exit_code


def may_train_in_workers(argv: Sequence[str]) -> bool:
    """A guess from the arguments alone: will this command train units in worker processes?

    Yes for ``train`` unless a flag says otherwise (``--backend inprocess|ray``, ``--workers
    1``, ``--initial-runs 1``, ``--help``). A config file can still say otherwise; then the
    worker server started on the guess idles until the command ends (a few seconds of CPU on
    another core, nothing else).
    """
    args = list(argv)
    if not args or args[0] != "train" or {"-h", "--help"} & set(args):
        return False

    def value(flag: str) -> str | None:
        for k, arg in enumerate(args):
            if arg == flag and k + 1 < len(args):
                return args[k + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
        return None

    return not (
        value("--backend") in ("inprocess", "ray")
        or value("--workers") == "1"
        or value("--initial-runs") == "1"
    )


def run(argv: Sequence[str] | None = None) -> None:
    """Process entry point (the ``nexlify`` command, ``python -m nexlify.cli`` and the original
    script): exit with :func:`main`'s code.

    After an interrupted run (exit 130, its state saved) further SIGINTs are ignored. A terminal's
    Ctrl-C goes to every process of the group, and one can still be pending, or land, while the
    interpreter shuts down (joining threads, flushing files); raised there, it would turn the
    clean exit into death by SIGINT (status -2), which the crash-safety test saw in CI.

    A ``train`` that will use worker processes (:func:`may_train_in_workers`) starts their fork
    server first thing, so its imports run beside this process's own.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if may_train_in_workers(args):
        from nexlify.pipeline.backends import prestart_workers

        prestart_workers()  # torch imports there while this process imports the same below
    try:
        code = main(args)
    except KeyboardInterrupt:  # landed after main's own handler, before it returned
        code = InterruptedRunError.exit_code
    if code == InterruptedRunError.exit_code:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
