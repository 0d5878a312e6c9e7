"""Configuration of the DQN agent: network, learner, replay and exploration.

Counts are in env transitions (one vector step of N envs is N transitions) unless a field says
gradient steps. Every Rainbow part is a switch here (full Rainbow by default); ``PLAIN_DQN`` lists
the values that turn the agent back into the plain DQN of format-1 checkpoints.

Reward scale. Rewards are per-step log-returns of equity, about 1e-4..1e-3 (positions are capped
at 5% of equity), far below the Huber threshold and C51's atom spacing. The learner multiplies
them by ``reward_scale`` (100: percent log-returns) before any target is formed, so Q-values are
in "percent of equity over the discounted horizon": with gamma 0.99 (about 100 steps) they stay
within a few units, which ``v_min``/``v_max`` = -10/10 covers with 0.4-wide atoms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nexlify.config import from_dict, is_finite_number, is_int, require

ACTIVATIONS = ("relu", "tanh", "gelu")
"""Hidden-layer activations the Q-network supports."""

TARGET_UPDATES = ("hard", "soft")
"""Ways to move the target network towards the online network."""

DISTRIBUTIONAL = ("none", "c51", "qr")
"""Value heads: scalar Q (none), categorical C51, or quantile regression (QR-DQN)."""

NORMS = ("none", "layer", "batch")
"""Normalisation after each hidden linear layer."""

LR_SCHEDULES = ("constant", "cosine", "plateau", "step")
"""Learning-rate schedules: constant, cosine annealing with warm restarts (per gradient step),
reduce-on-plateau of the validation score (per validation), step decay (per gradient step)."""

AMP_MODES = ("off", "bf16", "fp16")
"""Mixed precision of the learner's forward/loss: off, bfloat16 autocast (CPU or GPU), float16
autocast with a gradient scaler (CUDA only)."""

CPU_KERNEL_MODES = ("auto", "off")
"""The learner's CPU fast path: auto (compiled kernels where they apply) or off (plain torch)."""

PLAIN_DQN: dict[str, object] = {
    "double_dqn": False,
    "dueling": False,
    "prioritized_replay": False,
    "n_step": 1,
    "noisy": False,
    "distributional": "none",
    "reward_scale": 1.0,
}
"""Switches that make the plain DQN (what format-1 checkpoints hold)."""


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
    double_dqn: bool = True
    """Double DQN: the online network picks the next action, the target network values it."""
    dueling: bool = True
    """Dueling heads: Q = V + A - mean_a A (per atom for distributional heads)."""
    prioritized_replay: bool = True
    """Proportional prioritized replay (sum tree; new transitions at the max priority)."""
    per_alpha: float = 0.5
    """Priority exponent: P(i) ~ p_i ** alpha (0 = uniform)."""
    per_beta_start: float = 0.4
    """Importance-weight exponent at the start of a run (annealed linearly to per_beta_end)."""
    per_beta_end: float = 1.0
    """Importance-weight exponent at the end of a run."""
    per_eps: float = 1e-6
    """Added to |TD error| so that no transition gets priority 0."""
    n_step: int = 3
    """n-step returns, per env, cut at terminations and truncations (1 = one-step TD)."""
    noisy: bool = False
    """Factorised-Gaussian noisy output layers; replaces epsilon-greedy (epsilon is 0) when on.
    Off by default: it did not help in the ablation (benchmarks/results/ablation.md) and is the
    costliest part of full Rainbow on CPU."""
    noisy_sigma0: float = 0.5
    """Initial noise scale of noisy layers: sigma = noisy_sigma0 / sqrt(fan_in)."""
    distributional: str = "none"
    """Value head: none (scalar Q), c51 (categorical over atoms) or qr (QR-DQN quantiles).
    none by default: C51 triples the output layer's work and did not help in the ablation."""
    n_atoms: int = 51
    """Atoms of the C51 support, or quantiles of QR-DQN."""
    v_min: float = -10.0
    """Lowest C51 atom, in scaled-reward units (see reward_scale in the module docstring)."""
    v_max: float = 10.0
    """Highest C51 atom, in scaled-reward units."""
    reward_scale: float = 100.0
    """Rewards are multiplied by this before learning (100: log-returns in percent)."""
    weight_decay: float = 0.0
    """L2 penalty coefficient added to the gradient by Adam (0 = none)."""
    dropout: float = 0.0
    """Dropout probability after each hidden layer while learning (acting runs without it)."""
    norm: str = "none"
    """Normalisation after each hidden linear layer: none, layer or batch."""
    lr_schedule: str = "constant"
    """Learning-rate schedule: constant, cosine (warm restarts), plateau (validation) or step."""
    lr_period: int = 20_000
    """Gradient steps of the first cosine cycle (doubling after each restart), or per step decay."""
    lr_decay: float = 0.5
    """Factor of step decay and of reduce-on-plateau."""
    lr_patience: int = 2
    """Validations without a new best score before reduce-on-plateau lowers the rate."""
    lr_min: float = 1e-6
    """Floor of the learning rate for cosine and plateau schedules."""
    amp: str = "off"
    """Mixed precision: off, bf16 (autocast, CPU or GPU) or fp16 (CUDA, with a gradient scaler)."""
    cpu_kernels: str = "auto"
    """Learner fast path: auto (compiled kernels on CPU float32) or off (plain torch reference)."""
    hold_margin: float = 0.0
    """Greedy decisions hold unless the best action's Q-value beats hold's by this much, in
    Q units (rewards x reward_scale); 0 = plain argmax. A round trip of a full-cap position
    costs about reward_scale x max_position x 2 x (fee + slippage) in these units: 0.015 at the
    defaults, 0.3 with reward_scale 2000. Exploration and learning targets are unaffected."""

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

        for name in ("double_dqn", "dueling", "prioritized_replay", "noisy"):
            v = getattr(self, name)
            _require(isinstance(v, bool), name, v, "true or false")
        for name in ("per_alpha", "per_beta_start", "per_beta_end", "dropout"):
            v = getattr(self, name)
            _require(is_finite_number(v) and 0 <= v <= 1, name, v, "in [0, 1]")
        _require(self.dropout < 1, "dropout", self.dropout, "below 1")
        _require(
            is_finite_number(self.hold_margin) and self.hold_margin >= 0,
            "hold_margin",
            self.hold_margin,
            "a number >= 0",
        )
        for name in ("per_eps", "noisy_sigma0", "reward_scale", "lr_min"):
            v = getattr(self, name)
            _require(is_finite_number(v) and v > 0, name, v, "a positive number")
        _require(
            is_int(self.n_step) and 1 <= self.n_step <= 100, "n_step", self.n_step, "in [1, 100]"
        )
        _require(
            self.distributional in DISTRIBUTIONAL,
            "distributional",
            self.distributional,
            f"one of {', '.join(DISTRIBUTIONAL)}",
        )
        _require(
            is_int(self.n_atoms) and 2 <= self.n_atoms <= 1024,
            "n_atoms",
            self.n_atoms,
            "an integer in [2, 1024]",
        )
        _require(is_finite_number(self.v_min), "v_min", self.v_min, "a finite number")
        _require(
            is_finite_number(self.v_max) and self.v_max > self.v_min,
            "v_max",
            self.v_max,
            f"a number above v_min={self.v_min}",
        )
        _require(
            is_finite_number(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            self.weight_decay,
            "a number >= 0",
        )
        _require(self.norm in NORMS, "norm", self.norm, f"one of {', '.join(NORMS)}")
        _require(
            self.lr_schedule in LR_SCHEDULES,
            "lr_schedule",
            self.lr_schedule,
            f"one of {', '.join(LR_SCHEDULES)}",
        )
        for name in ("lr_period", "lr_patience"):
            v = getattr(self, name)
            _require(is_int(v) and v >= 1, name, v, "an integer >= 1")
        _require(
            is_finite_number(self.lr_decay) and 0 < self.lr_decay < 1,
            "lr_decay",
            self.lr_decay,
            "in (0, 1)",
        )
        _require(self.amp in AMP_MODES, "amp", self.amp, f"one of {', '.join(AMP_MODES)}")
        _require(
            self.cpu_kernels in CPU_KERNEL_MODES,
            "cpu_kernels",
            self.cpu_kernels,
            f"one of {', '.join(CPU_KERNEL_MODES)}",
        )

    @property
    def n_outputs_per_action(self) -> int:
        """Atoms (c51), quantiles (qr) or 1 (scalar Q) per action."""
        return 1 if self.distributional == "none" else self.n_atoms

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
