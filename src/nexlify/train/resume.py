"""Resume points: a training unit interrupted in hour three continues from its last validation.

At every validation (the end of a round, when every env has just finished an episode) the
trainer can write the whole state of the run to one file, atomically:

- the learner: online and target networks, optimizer, learning-rate scheduler, noise RNG,
  gradient-step count, and fp16's gradient scaler (its scale and growth count decide which
  steps are skipped, so a resumed fp16 run needs them to match an uninterrupted one);
- every random stream: the trainer's, the env's (or, with curriculum/augmentation, the one that
  builds each round's market);
- progress: transitions, gradient steps, episodes, rounds, the next validation, the training
  curve, the best weights so far, early stopping, the SWA average and the divergence guard;
- optionally (``train.resume_replay``, on by default) the replay buffer, filled rows only.

With the replay buffer the resumed unit is bit-for-bit the uninterrupted one. Without it the
file is small (the weights) but the buffer starts empty: the learner waits for
``learning_starts`` new transitions before it learns again, and results differ from an
uninterrupted run (the log says so).

The file holds tensors and plain data only and loads with ``torch.load(weights_only=True)``;
arrays are stored as raw bytes with their dtype and shape. It is written as
``training_state.pt`` next to the unit's model and removed once the unit has finished.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import REPLAY_FIELDS, ReplayBuffer
from nexlify.errors import CheckpointError
from nexlify.io import atomic_write

RESUME_FILE = "training_state.pt"
FORMAT = "nexlify-training-state"
VERSION = 1


def pack(value: Any) -> Any:
    """``value`` with every numpy array (and numpy scalar) in a form torch saves safely."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        raw = torch.from_numpy(array.reshape(-1).view(np.uint8).copy())
        return {"__ndarray__": raw, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: pack(v) for k, v in value.items()}
    if isinstance(value, tuple):  # kept a tuple: e.g. Adam's betas must come back as they were
        return tuple(pack(v) for v in value)
    if isinstance(value, list):
        return [pack(v) for v in value]
    return value


def unpack(value: Any) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            raw = value["__ndarray__"].numpy()
            return raw.view(np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        return {k: unpack(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(unpack(v) for v in value)
    if isinstance(value, list):
        return [unpack(v) for v in value]
    return value


class ResumePoint:
    """Where one unit keeps its resume state, and whether it includes the replay buffer."""

    def __init__(
        self,
        path: str | Path,
        fingerprint: str,
        *,
        replay: bool,
        log: logging.Logger,
        label: str,
    ) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.replay = replay
        self.log = log
        self.label = label
        self.saves = 0

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (plain data, tensors and numpy arrays) atomically."""
        record = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                  "replay": self.replay, "state": pack(state)}  # fmt: skip
        atomic_write(self.path, lambda handle: torch.save(record, handle))
        self.saves += 1

    def load(self) -> dict[str, Any] | None:
        """The saved state when there is one for this unit, else None (reasons are logged)."""
        if not self.path.is_file():
            return None
        try:
            record = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, corrupt or not a torch file
            self.log.warning("%s: the resume point %s is unreadable (%s: %s); starting the unit "
                             "from the beginning", self.label, self.path, type(exc).__name__,
                             str(exc).splitlines()[0][:200] if str(exc) else "")  # fmt: skip
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: not a nexlify training state")
        if record.get("version") != VERSION:
            raise CheckpointError(
                f"{self.path}: training state version {record.get('version')!r}; this nexlify "
                f"reads version {VERSION}"
            )
        if record.get("fingerprint") != self.fingerprint:
            self.log.warning(
                "%s: the resume point %s belongs to other settings or data; starting the unit "
                "from the beginning", self.label, self.path,
            )  # fmt: skip
            return None
        return dict(unpack(record["state"]))

    def discard(self) -> None:
        """Remove the file (the unit finished; its model and outcome hold the result)."""
        self.path.unlink(missing_ok=True)


def learner_state(agent: DQNAgent) -> dict[str, Any]:
    """Networks, optimizer, scheduler, noise RNG, step count and grad scaler of ``agent``."""
    scheduler = agent.lr_schedule.scheduler
    scaler = agent.grad_scaler
    return {
        "online": agent.online.state_dict(),
        "target": agent.target.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "n_updates": agent.n_updates,
        "noise": agent.noise_generator.get_state(),
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
    }


def load_learner_state(agent: DQNAgent, state: dict[str, Any]) -> None:
    """Restore :func:`learner_state` output into ``agent`` (same architecture)."""
    agent.online.load_state_dict(state["online"])
    agent.target.load_state_dict(state["target"])
    agent.optimizer.load_state_dict(state["optimizer"])
    if state["scheduler"] is not None and agent.lr_schedule.scheduler is not None:
        agent.lr_schedule.scheduler.load_state_dict(state["scheduler"])
    agent.n_updates = int(state["n_updates"])
    agent.noise_generator.set_state(state["noise"].cpu())
    scaler = state.get("grad_scaler")  # absent from files written before it was saved
    if scaler and agent.grad_scaler is not None:
        agent.grad_scaler.load_state_dict(scaler)


def replay_state(buffer: ReplayBuffer) -> dict[str, Any]:
    """The buffer's state with its storage cut to the filled rows."""
    state = dict(buffer.state_dict())
    for name in REPLAY_FIELDS:
        state[name] = state[name][: buffer.filled_rows].copy()
    return state


def load_replay_state(buffer: ReplayBuffer, state: dict[str, Any]) -> None:
    """Restore :func:`replay_state` output (rows past the filled ones stay zero)."""
    full = dict(state)
    for name in REPLAY_FIELDS:
        array = np.zeros_like(getattr(buffer, name))
        rows = state[name]
        if rows.shape[1:] != array.shape[1:] or rows.shape[0] > array.shape[0]:
            raise CheckpointError(
                f"replay state: {name} has shape {list(rows.shape)}, this buffer holds "
                f"{list(array.shape)}"
            )
        array[: rows.shape[0]] = rows
        full[name] = array
    buffer.load_state_dict(full)
