"""Recovery from a diverging learner: roll back to the last good state, lower the learning rate.

The trainer checks the loss every ``CHECK_EVERY`` gradient steps (the only place it waits for
the device) and, with prioritized replay, the TD errors of every step before they become
priorities. A check that finds the loss and every weight finite takes a snapshot of the online
and target networks and the optimizer (a few hundred kB at the default size). A non-finite loss,
TD error or weight restores that snapshot, multiplies the learning rate by ``lr_factor`` and
logs it; after ``max_rollbacks`` rollbacks in one run, :class:`TrainingError` ends the run with
what happened and what to change.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from nexlify.agent.dqn import DQNAgent
from nexlify.errors import TrainingError

CHECK_EVERY = 50
"""Gradient steps between loss checks (each check synchronises with the device)."""


class DivergenceGuard:
    """Snapshots a learner while it is healthy and restores it when it diverges."""

    def __init__(
        self,
        agent: DQNAgent,
        *,
        max_rollbacks: int,
        lr_factor: float,
        log: logging.Logger,
        label: str,
    ) -> None:
        self.agent = agent
        self.max_rollbacks = max_rollbacks
        self.lr_factor = lr_factor
        self.log = log
        self.label = label
        self.rollbacks = 0
        self.events: list[dict[str, float]] = []
        """One entry per rollback: gradient step, learning rate after it."""
        self._snapshot: dict[str, Any] | None = None
        self.snapshot()

    def state_dict(self) -> dict[str, Any]:
        """Rollbacks so far and the last good snapshot (for resume points)."""
        return {"rollbacks": self.rollbacks, "events": list(self.events),
                "snapshot": self._snapshot}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rollbacks = int(state["rollbacks"])
        self.events = list(state["events"])
        self._snapshot = state["snapshot"]

    def weights_finite(self) -> bool:
        """Whether every online weight is finite."""
        return all(bool(torch.isfinite(p).all()) for p in self.agent.online.parameters())

    def snapshot(self) -> None:
        """Remember the learner's current state as the last good one."""
        agent = self.agent
        self._snapshot = {
            "online": _clone(agent.online.state_dict()),
            "target": _clone(agent.target.state_dict()),
            "optimizer": copy.deepcopy(agent.optimizer.state_dict()),
            "n_updates": agent.n_updates,
        }

    def check(self, loss: float, step: int) -> bool:
        """After a loss check: snapshot when healthy (True), else roll back (False)."""
        if loss == loss and abs(loss) != float("inf") and self.weights_finite():
            self.snapshot()
            return True
        self.rollback(f"the loss became {loss}", step)
        return False

    def rollback(self, reason: str, step: int) -> None:
        """Restore the last good state with a lower learning rate, or fail after too many."""
        if self.rollbacks >= self.max_rollbacks:
            raise TrainingError(
                f"{self.label}: training diverged ({reason} at gradient step {step}) after "
                f"{self.rollbacks} rollback(s) with lower learning rates; lower "
                "agent.learning_rate or agent.reward_scale, or raise agent.max_grad_norm clipping"
            )
        assert self._snapshot is not None
        agent, snap = self.agent, self._snapshot
        agent.online.load_state_dict(snap["online"])
        agent.target.load_state_dict(snap["target"])
        agent.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        agent.n_updates = snap["n_updates"]
        agent.lr_schedule.scale(self.lr_factor)
        self.rollbacks += 1
        lr = agent.lr_schedule.learning_rate
        self.events.append({"gradient_step": float(step), "learning_rate": lr})
        self.log.warning(
            "%s: %s at gradient step %d; rolled back to the last good weights, learning rate "
            "now %.3g (rollback %d of at most %d)",
            self.label, reason, step, lr, self.rollbacks, self.max_rollbacks,
        )  # fmt: skip


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
