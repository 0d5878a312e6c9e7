"""The learner step: the gradient steps due after each vector step of collection.

Each gradient step anneals prioritized replay's beta, samples a batch (halving it on
out-of-memory), updates the agent, writes the new priorities, and lets the divergence guard
roll back to the last good weights when a loss, TD error or weight stops being finite. The
SWA average, when on, takes the weights after every healthy step of its last phase.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBuffer
from nexlify.train.batch_size import OOMBackoff
from nexlify.train.divergence import CHECK_EVERY, DivergenceGuard
from nexlify.train.swa import WeightAverager


class LearnerStep:
    """Gradient steps of one training run."""

    def __init__(
        self,
        agent: DQNAgent,
        buffer: ReplayBuffer,
        rng: np.random.Generator,
        *,
        oom_backoff: OOMBackoff,
        guard: DivergenceGuard,
        averager: WeightAverager | None,
        planned_transitions: int,
        swa_start: float,
    ) -> None:
        self.agent = agent
        self.buffer = buffer
        self.rng = rng
        self.oom_backoff = oom_backoff
        self.guard = guard
        self.averager = averager
        self.planned = planned_transitions
        self.swa_start = swa_start
        """Fraction of the planned transitions after which SWA starts averaging."""
        self.gradient_steps = 0
        self.losses: list[float] = []
        """Loss of every ``CHECK_EVERY``-th healthy step (the training curve's loss)."""
        self.refill_until = 0
        """No learning before this many transitions (a resume without its replay buffer)."""

    def learn(self, before: int, transitions: int) -> None:
        """The gradient steps due for the transitions ``before`` .. ``transitions``."""
        due = self.agent.config.gradient_steps_between(before, transitions)
        if transitions < self.refill_until:
            return
        for _ in range(due):
            self._gradient_step(transitions)

    def _gradient_step(self, transitions: int) -> None:
        cfg = self.agent.config
        per = cfg.prioritized_replay
        if per:
            frac = min(transitions / self.planned, 1.0)
            beta = cfg.per_beta_start + frac * (cfg.per_beta_end - cfg.per_beta_start)
            self.buffer.sampler.beta = beta  # type: ignore[attr-defined]
        batch, stats = self.oom_backoff.step(
            cfg.batch_size, lambda n: self.buffer.sample(n, self.rng), self.agent.update_no_sync
        )
        self.gradient_steps += 1
        healthy = True
        if per and self.agent.last_td_error_B is not None:
            td_B = self.agent.last_td_error_B.cpu().numpy()
            healthy = bool(np.isfinite(td_B).all())
            if healthy:  # a NaN priority would poison the sum tree
                self.buffer.update_priorities(batch.indices, td_B)
            else:
                self.guard.rollback("a TD error became non-finite", self.gradient_steps)
        if healthy and self.gradient_steps % CHECK_EVERY == 0:
            loss = float(stats[0])
            healthy = self.guard.check(loss, self.gradient_steps)
            if healthy:
                self.losses.append(loss)
        if self.averager is None:
            return
        if not healthy:
            self.averager.restart_if_nonfinite(self.agent.online)
        elif transitions >= self.swa_start * self.planned:
            self.averager.update(self.agent.online)

    def ensure_finite_weights(self) -> None:
        """Before a validation: never validate (or keep) broken weights."""
        if not self.guard.weights_finite():
            self.guard.rollback("a weight became non-finite", self.gradient_steps)
            if self.averager is not None:
                self.averager.restart_if_nonfinite(self.agent.online)

    def averager_state(self) -> dict[str, Any] | None:
        if self.averager is None:
            return None
        return {"state": self.averager.averaged.state_dict(), "n": self.averager.n_averaged}

    def load_averager_state(self, state: dict[str, Any] | None) -> None:
        if self.averager is not None and state is not None:
            self.averager.averaged.load_state_dict(state["state"])
            self.averager.n_averaged = state["n"]
