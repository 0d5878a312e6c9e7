"""Configuration of the DQN agent: network, learner, replay and exploration.

Counts are in env transitions (one vector step of N envs is N transitions) unless a field says
gradient steps. Rainbow parts (issue 4) are meant to arrive here as further flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nexlify.config import from_dict, is_finite_number, is_int, require

ACTIVATIONS = ("relu", "tanh", "gelu")
"""Hidden-layer activations the Q-network supports."""

TARGET_UPDATES = ("hard", "soft")
"""Ways to move the target network towards the online network."""


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    require(ok, "agent", name, value, rule)


@dataclass(frozen=True)
class AgentConfig:
    """DQN agent: Q-network shape, learner settings, replay size and epsilon-greedy exploration."""

    hidden_sizes: tuple[int, ...] = (128, 128)
    """Widths of the Q-network's hidden layers (a list from YAML/JSON is turned into a tuple)."""
    activation: str = "relu"
    """Hidden-layer activation: relu, tanh or gelu."""
    learning_rate: float = 2.5e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor per env step used to bootstrap from the next state's value."""
    batch_size: int = 128
    """Transitions per gradient step."""
    buffer_size: int = 200_000
    """Replay capacity in transitions over all envs (each env keeps buffer_size // n_envs)."""
    learning_starts: int = 2_000
    """Transitions collected (over all envs) before the first gradient step."""
    train_freq: int = 4
    """Env transitions per gradient step (16 envs and train_freq=4: 4 steps per vector step)."""
    target_update: str = "hard"
    """hard: copy the online network every target_update_interval steps; soft: Polyak every step."""
    target_update_interval: int = 1_000
    """Gradient steps between hard target-network copies (ignored for soft updates)."""
    tau: float = 0.005
    """Polyak coefficient of soft updates: target <- (1 - tau) * target + tau * online."""
    huber_delta: float = 1.0
    """Beta of the smooth-L1 (Huber) TD loss: quadratic below it, linear (gradient +-1) above."""
    max_grad_norm: float = 10.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    eps_start: float = 1.0
    """Exploration epsilon at the start of the run."""
    eps_end: float = 0.05
    """Exploration epsilon after the decay (kept until the end of the run)."""
    eps_decay_fraction: float = 0.5
    """Fraction of the run's total transitions over which epsilon falls linearly to eps_end."""
    adam_eps: float = 1e-5
    """Epsilon of Adam's denominator (1e-5 rather than torch's 1e-8, as in Rainbow/CleanRL)."""

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        h = self.hidden_sizes
        _require(
            isinstance(h, tuple) and len(h) >= 1 and all(is_int(w) and 1 <= w <= 65_536 for w in h),
            "hidden_sizes",
            h,
            "a non-empty list of integers in [1, 65536]",
        )
        _require(
            self.activation in ACTIVATIONS,
            "activation",
            self.activation,
            f"one of {', '.join(ACTIVATIONS)}",
        )
        _require(
            is_finite_number(self.learning_rate) and 0 < self.learning_rate < 1,
            "learning_rate",
            self.learning_rate,
            "a number in (0, 1)",
        )
        _require(
            is_finite_number(self.gamma) and 0 <= self.gamma <= 1, "gamma", self.gamma, "in [0, 1]"
        )
        for name in ("batch_size", "buffer_size", "train_freq", "target_update_interval"):
            v = getattr(self, name)
            _require(is_int(v) and v >= 1, name, v, "an integer >= 1")
        _require(
            self.batch_size <= self.buffer_size,
            "batch_size",
            self.batch_size,
            f"at most buffer_size={self.buffer_size}",
        )
        _require(
            is_int(self.learning_starts) and self.learning_starts >= 0,
            "learning_starts",
            self.learning_starts,
            "an integer >= 0",
        )
        _require(
            self.target_update in TARGET_UPDATES,
            "target_update",
            self.target_update,
            f"one of {', '.join(TARGET_UPDATES)}",
        )
        _require(is_finite_number(self.tau) and 0 < self.tau <= 1, "tau", self.tau, "in (0, 1]")
        _require(
            is_finite_number(self.huber_delta) and self.huber_delta > 0,
            "huber_delta",
            self.huber_delta,
            "a positive number",
        )
        _require(
            is_finite_number(self.max_grad_norm) and self.max_grad_norm >= 0,
            "max_grad_norm",
            self.max_grad_norm,
            "a number >= 0; 0 disables clipping",
        )
        for name in ("eps_start", "eps_end", "eps_decay_fraction"):
            v = getattr(self, name)
            _require(is_finite_number(v) and 0 <= v <= 1, name, v, "in [0, 1]")
        _require(
            self.eps_end <= self.eps_start,
            "eps_end",
            self.eps_end,
            f"at most eps_start={self.eps_start}",
        )
        _require(
            is_finite_number(self.adam_eps) and 0 < self.adam_eps < 1,
            "adam_eps",
            self.adam_eps,
            "a number in (0, 1)",
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AgentConfig:
        """Build from a plain dict (e.g. a checkpoint's ``agent_config``), refusing unknown keys."""
        return from_dict(cls, values, "agent")

    def capacity_per_env(self, n_envs: int) -> int:
        """Replay rows per env: buffer_size // n_envs (ConfigError if that is below 1)."""
        _require(
            is_int(n_envs) and 1 <= n_envs <= self.buffer_size,
            "buffer_size",
            self.buffer_size,
            f"must hold at least one transition per env (n_envs={n_envs})",
        )
        return self.buffer_size // n_envs

    def gradient_steps_between(self, transitions_before: int, transitions_after: int) -> int:
        """Gradient steps due when the transition count moves from before to after."""
        # Steps fall on the multiples of train_freq in (before, after] that are >= learning_starts,
        # so the schedule does not depend on how the transitions arrived (1 env or 64 at a time).
        floor = max(transitions_before, self.learning_starts - 1)
        return max(0, transitions_after // self.train_freq - floor // self.train_freq)
