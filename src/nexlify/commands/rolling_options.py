"""The rolling-retraining options, shared by ``nexlify study`` and ``nexlify paper``.

One definition of ``--retrain-every``, ``--retrain-window``, ``--retrain-score-days``,
``--fine-tune-episodes`` and ``--retrain-margin`` (defaults from :class:`RollingSpec`), so the
two commands cannot drift apart.
"""

from __future__ import annotations

import argparse

from nexlify.errors import ConfigError
from nexlify.pipeline.rolling import RollingSpec


def add_rolling_flags(parser: argparse.ArgumentParser, description: str) -> None:
    """The rolling-retraining option group; ``description`` says what it does in the command."""
    d = RollingSpec(every_days=30.0)
    group = parser.add_argument_group("rolling retraining", description)
    group.add_argument(
        "--retrain-every",
        type=float,
        metavar="DAYS",
        help="days between fine-tunes (default: no rolling retraining)",
    )
    group.add_argument(
        "--retrain-window",
        type=float,
        default=d.window_days,
        metavar="DAYS",
        help=f"days each fine-tune trains on (default {d.window_days:g})",
    )
    group.add_argument(
        "--retrain-score-days",
        type=float,
        metavar="DAYS",
        help="latest days both models are scored on, at most --retrain-every "
        f"(default {d.score_days:g} or --retrain-every if shorter)",
    )
    group.add_argument(
        "--fine-tune-episodes",
        type=int,
        default=d.episodes,
        metavar="N",
        help=f"episodes of each fine-tune (default {d.episodes})",
    )
    group.add_argument("--retrain-margin", type=float, default=d.margin, metavar="S",
                       help="validation-score points a candidate must win by (default "
                       f"{d.margin:g})")  # fmt: skip


def rolling_spec(args: argparse.Namespace, command: str) -> RollingSpec | None:
    """The options as a spec (None without ``--retrain-every``); a bad value is refused
    naming ``command`` and the option."""
    if args.retrain_every is None:
        return None
    try:
        score = args.retrain_score_days
        if score is None:
            score = min(RollingSpec(every_days=args.retrain_every).score_days, args.retrain_every)
        return RollingSpec(every_days=args.retrain_every, window_days=args.retrain_window,
                           score_days=score, episodes=args.fine_tune_episodes,
                           margin=args.retrain_margin)  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"{command} {exc}") from None
