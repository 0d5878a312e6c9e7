"""Learning-rate schedules of the learner, chosen by ``AgentConfig.lr_schedule``.

cosine and step advance once per gradient step; plateau advances once per validation with the
validation score (higher is better). constant does nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from nexlify.agent.config import AgentConfig


class LRSchedule:
    """Wraps a torch scheduler so the trainer calls two hooks whatever the schedule is."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: AgentConfig) -> None:
        self.kind = config.lr_schedule
        self.scheduler: Any = None
        sched = torch.optim.lr_scheduler
        if self.kind == "cosine":
            self.scheduler = sched.CosineAnnealingWarmRestarts(
                optimizer, T_0=config.lr_period, T_mult=2, eta_min=config.lr_min
            )
        elif self.kind == "step":
            self.scheduler = sched.StepLR(
                optimizer, step_size=config.lr_period, gamma=config.lr_decay
            )
        elif self.kind == "plateau":
            self.scheduler = sched.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=config.lr_decay,
                patience=config.lr_patience,
                min_lr=config.lr_min,
            )
        self.optimizer = optimizer

    def after_gradient_step(self) -> None:
        """Advance per-step schedules (cosine, step)."""
        if self.kind in ("cosine", "step"):
            self.scheduler.step()

    def after_validation(self, score: float) -> None:
        """Advance reduce-on-plateau with the validation score."""
        if self.kind == "plateau":
            self.scheduler.step(score)

    def scale(self, factor: float) -> None:
        """Multiply the learning rate by ``factor`` now and for the rest of the schedule."""
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        base = getattr(self.scheduler, "base_lrs", None)
        if base is not None:
            self.scheduler.base_lrs = [lr * factor for lr in base]

    @property
    def learning_rate(self) -> float:
        """Current learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])
