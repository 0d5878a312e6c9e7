"""Batch size and replay capacity from the memory at hand, and the out-of-memory back-off.

**Planning** (``train.auto_batch``, off by default). Two budgets, each ``train.memory_fraction``
of what is free, split between the training units that run at once on the machine:

- the *learner* budget, on the learner's device (CUDA/ROCm: ``torch.cuda.mem_get_info``; CPU:
  available RAM), pays for the network, its target copy, gradients, Adam's moments and the SWA
  average (``6 x parameters``) plus, per sample of a batch, the activations kept for the backward
  pass, their gradients, the no-grad forwards on the next observations and the loss terms,
  estimated from the network's shape and doubled for safety (:func:`bytes_per_sample`);
- the *replay* budget, in RAM (replay storage is numpy on the host whatever the device), pays
  ``obs_dim x 8 + 14`` bytes per transition, plus 64 for prioritized replay's trees.

The batch is the largest that fits, at most ``train.auto_batch_max`` on a GPU (a GPU runs a
bigger batch in about the same time per step) and at most ``agent.batch_size`` on the CPU (there
each sample costs compute, and memory is never what limits a batch); a power of two when it is
cut down. The replay capacity is ``agent.buffer_size`` or what fits, whichever is smaller: a
bigger buffer is not a better one, so planning only ever shrinks it. The plan is logged and the
planned values are saved in the model's checkpoint; results then depend on the machine's free
memory, so copy them into the config to reproduce a run exactly.

**Back-off** (always on). :class:`OOMBackoff` runs a gradient step; when torch runs out of memory
it frees what it can, halves the batch and retries the step, and raises :class:`TrainingError`
rather than go below ``train.min_batch_size``. The smaller batch is kept for the rest of the run.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from nexlify.agent.config import AgentConfig
from nexlify.errors import TrainingError
from nexlify.system.memory import available_memory, device_free_memory, free_cached_memory

if TYPE_CHECKING:
    from nexlify.train.config import TrainConfig

OUT_OF_MEMORY: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
"""What torch raises when an allocation fails (``torch.OutOfMemoryError`` since torch 2.5)."""

SAFETY = 2
"""Factor on the per-sample estimate (allocator fragmentation, cuBLAS workspace, autocast)."""

BatchT = TypeVar("BatchT")
StatsT = TypeVar("StatsT")


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def parameter_count(obs_dim: int, n_actions: int, config: AgentConfig) -> int:
    """Trainable parameters of the Q-network ``config`` describes (see agent.networks)."""
    widths = [obs_dim, *config.hidden_sizes]
    n = sum((w_in + 1) * w_out for w_in, w_out in itertools.pairwise(widths))
    if config.norm in ("layer", "batch"):
        n += 2 * sum(config.hidden_sizes)
    Z, width = config.n_outputs_per_action, widths[-1]
    per_head = 2 if config.noisy else 1  # noisy layers learn a mean and a scale per weight
    if config.dueling or config.noisy:
        n += per_head * (width + 1) * n_actions * Z
        if config.dueling:
            n += per_head * (width + 1) * Z
    else:
        n += (width + 1) * n_actions * Z
    return n


def bytes_per_sample(obs_dim: int, n_actions: int, config: AgentConfig) -> int:
    """Estimated learner memory per sample of a batch in one gradient step (with SAFETY)."""
    Z = config.n_outputs_per_action
    head = n_actions * Z + (Z if config.dueling else 0)
    per_layer = 2 + (config.norm != "none") + (config.dropout > 0)  # linear, activation, ...
    kept = obs_dim + per_layer * sum(config.hidden_sizes) + 4 * head  # saved for backward
    no_grad = obs_dim + 2 * max(config.hidden_sizes) + 3 * head  # one next-obs forward
    forwards = 2 if config.double_dqn else 1
    loss_terms = 8 * head if config.distributional != "none" else 4 * n_actions
    batch_fields = 2 * obs_dim + 8
    floats = 2 * kept + forwards * no_grad + loss_terms + batch_fields
    return 4 * floats * SAFETY


def fixed_learner_bytes(obs_dim: int, n_actions: int, config: AgentConfig) -> int:
    """Weights, target weights, gradients, Adam's two moments and the SWA average (float32)."""
    return 6 * 4 * parameter_count(obs_dim, n_actions, config)


def replay_bytes_per_transition(obs_dim: int, config: AgentConfig) -> int:
    """Host memory of one stored transition (obs and next obs, action, reward, two flags)."""
    tree = 64 if config.prioritized_replay else 0  # two float64 trees of 2L nodes, L <= 2C
    return obs_dim * 4 * 2 + 8 + 4 + 1 + 1 + tree


@dataclass(frozen=True)
class BatchPlan:
    """What :class:`BatchPlanner` chose for one run, and from what."""

    batch_size: int
    """Transitions per gradient step."""
    buffer_size: int
    """Replay capacity in transitions over all envs."""
    requested_batch_size: int
    """agent.batch_size before planning."""
    requested_buffer_size: int
    """agent.buffer_size before planning."""
    device: str
    """Where the learner runs."""
    learner_free_bytes: int | None
    """Free memory on the learner's device when planned (None = unknown)."""
    host_free_bytes: int | None
    """Available RAM when planned (None = unknown)."""
    sample_bytes: int
    """Estimated learner bytes per sample of a batch."""
    fixed_bytes: int
    """Estimated learner bytes independent of the batch (weights, optimizer, copies)."""
    transition_bytes: int
    """Replay bytes per stored transition."""

    def apply(self, config: AgentConfig) -> AgentConfig:
        """``config`` with the planned batch size and replay capacity."""
        return dataclasses.replace(config, batch_size=self.batch_size, buffer_size=self.buffer_size)

    def describe(self) -> str:
        """One line for the log."""
        learner = _gib(self.learner_free_bytes) if self.learner_free_bytes is not None else "?"
        host = _gib(self.host_free_bytes) if self.host_free_bytes is not None else "?"
        return (
            f"auto batch: batch {self.requested_batch_size} -> {self.batch_size} "
            f"({learner} free on {self.device}, ~{self.sample_bytes / 1024:.1f} KiB/sample), "
            f"replay {self.requested_buffer_size} -> {self.buffer_size} ({host} RAM available, "
            f"{self.transition_bytes} B/transition)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the run summary."""
        return dataclasses.asdict(self)


@dataclass
class BatchPlanner:
    """Plans batch size and replay capacity (see the module docstring); one per training unit."""

    max_batch_size: int = 1024
    """Largest batch for a GPU learner (train.auto_batch_max)."""
    min_batch_size: int = 16
    """Below this the plan fails (train.min_batch_size)."""
    memory_fraction: float = 0.5
    """Share of free memory planned for (train.memory_fraction)."""
    concurrent_units: int = 1
    """Training units sharing this machine's RAM and this device at the same time."""
    device_memory: Callable[[torch.device], int | None] = device_free_memory
    """Free bytes on a device (a fake in tests)."""
    host_memory: Callable[[], int | None] = available_memory
    """Available RAM in bytes (a fake in tests)."""
    last_plan: BatchPlan | None = field(default=None, init=False)
    """The latest plan (for the run summary)."""

    @classmethod
    def from_train_config(cls, train: TrainConfig, concurrent_units: int = 1) -> BatchPlanner:
        """A planner with the limits of ``train`` (auto_batch_max, min_batch_size, ...)."""
        return cls(
            max_batch_size=train.auto_batch_max,
            min_batch_size=train.min_batch_size,
            memory_fraction=train.memory_fraction,
            concurrent_units=max(1, concurrent_units),
        )

    def plan(
        self,
        config: AgentConfig,
        obs_dim: int,
        n_actions: int,
        num_envs: int,
        device: str | torch.device,
    ) -> BatchPlan:
        """Batch size and replay capacity for ``config`` on ``device`` (TrainingError if even
        ``min_batch_size`` or one row of replay does not fit)."""
        dev = torch.device(device)
        share = self.memory_fraction / self.concurrent_units
        sample = bytes_per_sample(obs_dim, n_actions, config)
        fixed = fixed_learner_bytes(obs_dim, n_actions, config)
        per_transition = replay_bytes_per_transition(obs_dim, config)
        host = self.host_memory()
        learner = host if dev.type == "cpu" else self.device_memory(dev)
        ceiling = config.batch_size if dev.type == "cpu" else self.max_batch_size
        batch = ceiling
        if learner is not None:
            fits = int((learner * share - fixed) // sample)
            batch = ceiling if fits >= ceiling else _power_of_two_at_most(fits)
            if batch < self.min_batch_size:
                raise TrainingError(
                    f"auto batch: {_gib(learner)} free on {dev} leaves room for a batch of "
                    f"{max(fits, 0)} (~{sample} B/sample, {_gib(fixed)} for the network and "
                    f"optimizer), below train.min_batch_size={self.min_batch_size}; free memory, "
                    "run fewer units at once or shrink agent.hidden_sizes"
                )
        buffer = config.buffer_size
        if host is not None:
            replay_budget = host * share - (batch * sample + fixed if dev.type == "cpu" else 0)
            fits = int(max(replay_budget, 0) // per_transition)
            buffer = min(buffer, fits - fits % num_envs)
            if buffer < max(batch, num_envs):
                raise TrainingError(
                    f"auto batch: {_gib(host)} of RAM available holds {max(buffer, 0)} replay "
                    f"transitions ({per_transition} B each), fewer than a batch of {batch}; "
                    "free memory, run fewer units at once or use fewer pairs"
                )
        plan = BatchPlan(batch, buffer, config.batch_size, config.buffer_size, str(dev), learner,
                         host, sample, fixed, per_transition)  # fmt: skip
        self.last_plan = plan
        return plan


def _power_of_two_at_most(n: int) -> int:
    return 1 << (n.bit_length() - 1) if n >= 1 else 0


class OOMBackoff:
    """Runs gradient steps; on out-of-memory halves the batch and retries (see module docstring).

    One per training unit. ``limit`` is the batch size the back-off has come down to (None until
    the first out-of-memory error); it caps every later step of the run.
    """

    def __init__(
        self,
        min_batch_size: int = 16,
        *,
        device: str | torch.device = "cpu",
        log: logging.Logger | None = None,
        label: str = "run",
        free_memory: Callable[[torch.device], None] = free_cached_memory,
    ) -> None:
        self.min_batch_size = min_batch_size
        self.device = torch.device(device)
        self.log = log or logging.getLogger("nexlify.train")
        self.label = label
        self.free_memory = free_memory
        self.limit: int | None = None
        self.reductions = 0
        """Times the batch was halved."""

    def batch_size(self, wanted: int) -> int:
        """The batch size the next step uses when ``wanted`` is asked for."""
        return wanted if self.limit is None else min(wanted, self.limit)

    def step(
        self, wanted: int, sample: Callable[[int], BatchT], update: Callable[[BatchT], StatsT]
    ) -> tuple[BatchT, StatsT]:
        """``update(sample(n))`` with n = :meth:`batch_size`, halving n after out-of-memory."""
        while True:
            n = self.batch_size(wanted)
            try:
                return self._attempt(n, sample, update)
            except OUT_OF_MEMORY as exc:
                # Leaving the except block drops the traceback, and with it the failed step's
                # tensors, before the cache is emptied.
                reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            self._back_off(n, reason)

    @staticmethod
    def _attempt(
        n: int, sample: Callable[[int], BatchT], update: Callable[[BatchT], StatsT]
    ) -> tuple[BatchT, StatsT]:
        batch = sample(n)
        return batch, update(batch)

    def _back_off(self, n: int, reason: str) -> None:
        self.free_memory(self.device)
        half = n // 2
        if half < self.min_batch_size:
            raise TrainingError(
                f"{self.label}: out of memory on {self.device} at batch size {n} ({reason}); "
                f"halving it would go below train.min_batch_size={self.min_batch_size}. Free "
                "device memory, run fewer units at once, or shrink agent.hidden_sizes"
            )
        self.limit = half
        self.reductions += 1
        self.log.warning("%s: out of memory on %s at batch size %d; retrying the step with %d",
                         self.label, self.device, n, half)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the run summary."""
        return {"batch_size_limit": self.limit, "oom_reductions": self.reductions}
