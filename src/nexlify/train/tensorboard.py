"""Training curves in TensorBoard (``--tensorboard``): one run per training unit, one point per
validation.

Each unit (initial run = one seed, retraining iteration, fold) writes to
``<output_dir>/tensorboard/<unit label>``, so ``tensorboard --logdir <output_dir>/tensorboard``
shows the seeds side by side. The points are the trainer's history entries, at step = episodes
done: ``val/score`` and ``val/<metric>`` (the validation averages), ``train/return_pct``,
``train/loss``, ``train/epsilon``, ``train/learning_rate``, ``train/phase`` (curriculum), and
``swa/score``, ``swa/<metric>`` for the validation of the averaged weights.

TensorBoard is an optional extra (``pip install 'nexlify[tensorboard]'``); without it
:func:`require_tensorboard` fails with a message that says how to install it.
"""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Any

from nexlify.errors import ConfigError

INSTALL_HINT = "pip install 'nexlify[tensorboard]' (or: pip install tensorboard)"
TENSORBOARD_DIR = "tensorboard"
"""Folder of the TensorBoard runs inside a pipeline's output folder."""


def tensorboard_available() -> bool:
    """Whether the tensorboard package is installed."""
    return find_spec("tensorboard") is not None


def require_tensorboard() -> None:
    """ConfigError with the install command unless TensorBoard logging can work here."""
    if not tensorboard_available():
        raise ConfigError(
            f"--tensorboard (train.tensorboard): the tensorboard package is not installed; "
            f"{INSTALL_HINT}, or run without --tensorboard"
        )


def unit_log_dir(output_dir: str | Path, label: str) -> Path:
    """``<output_dir>/tensorboard/<label>``: where unit ``label`` writes its curves."""
    return Path(output_dir) / TENSORBOARD_DIR / label


def scalar_tags(entry: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> value for one history entry (non-finite and non-numbers left out)."""
    swa = bool(entry.get("swa"))
    tags: dict[str, float] = {}
    for key, value in entry.items():
        if key in ("episode", "swa") or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if key.startswith("val_"):
            tag = f"{'swa' if swa else 'val'}/{key.removeprefix('val_')}"
        else:
            tag = f"train/{key.removeprefix('train_')}"
        tags[tag] = float(value)
    return tags


class TensorBoardLogger:
    """Writes a training unit's history entries as TensorBoard scalars (see module docstring).

    ``purge_step``: a unit resumed from a checkpoint at that episode hides the events the
    interrupted attempt wrote from there on, so the curve does not double back.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        require_tensorboard()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # e.g. a protobuf that this tensorboard cannot use
            raise ConfigError(f"--tensorboard: TensorBoard does not import ({exc}); "
                              f"{INSTALL_HINT}") from None  # fmt: skip
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    @classmethod
    def for_unit(
        cls, output_dir: str | Path, label: str, *, purge_step: int | None = None
    ) -> TensorBoardLogger:
        """A logger writing to ``<output_dir>/tensorboard/<label>``."""
        return cls(unit_log_dir(output_dir, label), purge_step=purge_step)

    def log(self, entry: dict[str, Any]) -> None:
        """One history entry at step = its ``episode``; flushed at once (validations are rare,
        and a crashed run keeps its curve)."""
        step = int(entry.get("episode", 0))
        for tag, value in scalar_tags(entry).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_text(self, tag: str, text: str) -> None:
        """A note shown in TensorBoard's text tab (e.g. the device setup)."""
        self.writer.add_text(tag, text)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
