"""The ``nexlify`` command: one handler per subcommand, errors mapped to exit codes.

nexlify train [options]      the training pipeline (same flags as the root script)
nexlify baselines [options]  cash, buy-and-hold, trend, always-long, SMA, random: metrics
nexlify ablate [options]     full config vs each Rainbow/training component removed
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Collection, Sequence

from rich.console import Console

from nexlify.commands import COMMAND_HELP
from nexlify.errors import InterruptedRunError, NexlifyError


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``nexlify`` parser with the options of ``commands`` (default: every command).

    Commands left out are still listed, with their help line (``nexlify --help``), but their
    modules are not imported: they bring torch and pandas (seconds), so :func:`main` builds
    only the command being run, after :func:`run` had the chance to start the worker
    processes' imports beside it.
    """
    parser = argparse.ArgumentParser(
        prog="nexlify",
        description="Reinforcement-learning trading agents for crypto spot markets.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = set(COMMAND_HELP) if commands is None else set(commands)
    unknown = wanted - set(COMMAND_HELP)
    if unknown:
        raise ValueError(f"unknown commands {sorted(unknown)}; known: {list(COMMAND_HELP)}")
    for name, help_line in COMMAND_HELP.items():
        if name in wanted:
            _REGISTER[name](sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def _register_train(sub: argparse._SubParsersAction) -> None:
    from nexlify.commands.options import add_train_options
    from nexlify.commands.train import start_train

    train = sub.add_parser(
        "train",
        help=COMMAND_HELP["train"],
        description="Train several agents from different seeds, pick the best on held-out "
        "validation data, then retrain from it until the score plateaus.",
    )
    add_train_options(train)
    train.set_defaults(handler=start_train)


def _register_baselines(sub: argparse._SubParsersAction) -> None:
    from nexlify.commands.baselines import start_baselines
    from nexlify.commands.options import add_data_options

    baselines = sub.add_parser("baselines", help=COMMAND_HELP["baselines"])
    add_data_options(baselines)
    baselines.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    baselines.set_defaults(handler=start_baselines)


def _register_ablate(sub: argparse._SubParsersAction) -> None:
    from nexlify.commands.ablate import add_ablate_options, start_ablate
    from nexlify.commands.options import add_data_options

    ablate = sub.add_parser("ablate", help=COMMAND_HELP["ablate"])
    add_data_options(ablate)
    add_ablate_options(ablate)
    ablate.set_defaults(handler=start_ablate)


def _module_register(module: str) -> Callable[[argparse._SubParsersAction], None]:
    def register(sub: argparse._SubParsersAction) -> None:
        importlib.import_module(f"nexlify.commands.{module}").register(sub)

    return register


_REGISTER: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "train": _register_train,
    "baselines": _register_baselines,
    "ablate": _register_ablate,
    "backtest": _module_register("backtest"),
    "audit-lookahead": _module_register("audit"),
    "report": _module_register("report"),
    "walk-forward": _module_register("walk_forward"),
    "study": _module_register("study"),
    "meta-init": _module_register("meta"),
    "tune": _module_register("tune"),
    "data": _module_register("data"),
    "paper": _module_register("paper"),
    "preflight": _module_register("preflight"),
}


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first argument when that names one (the only option
    before it, ``--version``, takes no value), else None."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMAND_HELP else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nexlify`` command; returns the exit code (130 after Ctrl-C).

    A second Ctrl-C while the first is being handled (the run saving its state, the message
    being printed) still ends with 130 and a message, not a traceback and death by SIGINT.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _stop_taking_sigint()
        print("interrupted", file=sys.stderr)
        return InterruptedRunError.exit_code


_ignore_sigint_once_interrupted = False
"""Set by :func:`run` (the process entry point): :func:`_stop_taking_sigint` then ignores SIGINT
for the rest of the process. Left off for :func:`main` called in-process (tests, notebooks)."""


def _stop_taking_sigint() -> None:
    """The run is interrupted (its state saved): in the ``nexlify`` process, ignore SIGINT from
    here on, as soon as the interruption is handled rather than once :func:`main` has returned.

    A terminal's Ctrl-C goes to every process of the group, and the main process can take its
    own late (after the run already stopped because its workers did): a SIGINT still pending
    when ``main`` returned raised KeyboardInterrupt between ``main`` and :func:`run`'s handler,
    ending a clean exit 130 as death by SIGINT (status -2; the crash-safety test saw it in CI).
    With the handler set to ignore, a pending SIGINT is dropped.
    """
    if _ignore_sigint_once_interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    parser = build_parser([] if command is None else [command])
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
        if exc.exit_code == InterruptedRunError.exit_code:
            _stop_taking_sigint()
        logging.getLogger("nexlify").debug("error", exc_info=True)
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        _stop_taking_sigint()
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

    After an interrupted run (exit 130, its state saved) further SIGINTs are ignored, from the
    moment the interruption is handled (:func:`_stop_taking_sigint`). A terminal's Ctrl-C goes
    to every process of the group, and one can still be pending, or land, while the interpreter
    shuts down (joining threads, flushing files); raised there, it would turn the clean exit
    into death by SIGINT (status -2), which the crash-safety test saw in CI.

    A ``train`` that will use worker processes (:func:`may_train_in_workers`) starts their fork
    server first thing, so its imports run beside this process's own.
    """
    global _ignore_sigint_once_interrupted
    _ignore_sigint_once_interrupted = True
    args = list(sys.argv[1:] if argv is None else argv)
    if may_train_in_workers(args):
        from nexlify.pipeline.backends import prestart_workers

        prestart_workers()  # torch imports there while this process imports the same below
    try:
        code = main(args)
    except KeyboardInterrupt:  # landed after main's own handler, before it returned
        code = InterruptedRunError.exit_code
    if code == InterruptedRunError.exit_code:
        _stop_taking_sigint()
    sys.exit(code)


if __name__ == "__main__":
    run()
