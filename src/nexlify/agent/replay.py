"""Replay storage laid out (capacity_per_env, n_envs, ...) and the samplers that pick from it.

All N envs write one row per vector step, so a transition's flat index is ``row * n_envs + env``
and the filled slots are always the flat range ``[0, filled_rows * n_envs)``. Storage is numpy
(preallocated, written in place); sampled batches become torch tensors on the learner's device.

Sampling sits behind :class:`Sampler`: :class:`UniformSampler` or the prioritized sampler of
:mod:`nexlify.agent.sum_tree`. Storage holds one-step transitions; n-step returns are formed when
a batch is sampled, per env (down the env's column of rows), cut at the first termination or
truncation and at the newest row written: a sample that can look k < n steps ahead gets the
k-step return and the discount gamma ** k (a shorter n-step return is still an unbiased target).
Rewards are multiplied by ``reward_scale`` on the way out.
"""

# Batch fields carry their shape as a suffix (obs_BD, actions_B), as STYLE.md rule 3 asks.

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numba
import numpy as np
import torch

from nexlify.agent.config import AgentConfig
from nexlify.errors import CheckpointError
from nexlify.system.devices import HostTransfer

REPLAY_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")


@dataclass(frozen=True)
class ReplayBatch:
    """A sampled batch of transitions as tensors on the learner's device."""

    obs_BD: torch.Tensor
    """Observations s, float32 [B, D]."""
    actions_B: torch.Tensor
    """Actions taken in s, int64 [B]."""
    rewards_B: torch.Tensor
    """Rewards, float32 [B] (the discounted n-step sum once n-step returns exist)."""
    next_obs_BD: torch.Tensor
    """True next observations s' (the final observation where an episode ended), float32 [B, D]."""
    terminated_B: torch.Tensor
    """1.0 where s' is terminal (no bootstrapping), else 0.0; truncation is not termination."""
    discounts_B: torch.Tensor
    """Discount applied to the bootstrapped value of s': gamma here, gamma ** n for n-step."""
    indices: np.ndarray
    """Flat int64 indices ``row * n_envs + env`` of the samples (for priority updates)."""
    weights_B: torch.Tensor | None = None
    """Importance-sampling weights from a prioritized sampler; None for uniform sampling."""


class Sampler(Protocol):
    """Picks flat indices among the filled slots of a replay buffer."""

    def on_add(self, row: int) -> None:
        """Row ``row`` has just been written for every env."""

    def sample_indices(
        self, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` flat int64 indices of filled slots, and importance weights (or None)."""
        ...

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """New TD errors for previously sampled flat indices (no-op for uniform sampling)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume sampling exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class UniformSampler:
    """Every filled slot equally likely, drawn with replacement."""

    def __init__(self, capacity_per_env: int, n_envs: int) -> None:
        self.capacity_per_env = capacity_per_env
        self.n_envs = n_envs
        self.filled_rows = 0

    def on_add(self, row: int) -> None:
        """Grow the filled region (rows are written in order and wrap around)."""
        self.filled_rows = max(self.filled_rows, row + 1)

    def sample_indices(
        self, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Uniform flat indices in ``[0, filled_rows * n_envs)``; no weights."""
        if self.filled_rows == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.filled_rows * self.n_envs, size=n, dtype=np.int64), None

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform sampling has no priorities."""

    def state_dict(self) -> dict[str, Any]:
        """Filled rows only."""
        return {"filled_rows": self.filled_rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the filled rows."""
        self.filled_rows = int(state["filled_rows"])


@numba.njit(cache=True)
def _n_step_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    idx: np.ndarray,
    pos: int,
    n_step: int,
    gamma_powers: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    C, N = rewards.shape
    B = idx.shape[0]
    last = np.empty(B, dtype=np.int64)
    total = np.empty(B, dtype=np.float32)
    discount = np.empty(B, dtype=np.float32)
    for b in range(B):
        row, env = idx[b] // N, idx[b] % N
        ahead = (pos - 1 - row) % C  # rows written after this one
        acc = 0.0
        steps = 0
        r = row
        for k in range(min(n_step, ahead + 1)):
            r = (row + k) % C
            acc += gamma_powers[k] * rewards[r, env]
            steps = k + 1
            if terminated[r, env] or truncated[r, env]:
                break
        last[b] = r * N + env
        total[b] = acc
        discount[b] = gamma_powers[steps]
    return last, total, discount


class ReplayBuffer:
    """Ring buffer of transitions from N envs, preallocated as (capacity_per_env, n_envs, ...)."""

    def __init__(
        self,
        capacity_per_env: int,
        n_envs: int,
        obs_dim: int,
        *,
        gamma: float,
        device: str | torch.device = "cpu",
        sampler: Sampler | None = None,
        n_step: int = 1,
        reward_scale: float = 1.0,
    ) -> None:
        if capacity_per_env < 1 or n_envs < 1 or obs_dim < 1:
            raise ValueError(
                f"capacity_per_env={capacity_per_env}, n_envs={n_envs} and obs_dim={obs_dim} "
                "must all be >= 1"
            )
        C, N, D = capacity_per_env, n_envs, obs_dim
        self.capacity_per_env = C
        self.n_envs = N
        self.obs_dim = D
        self.gamma = float(gamma)
        self.n_step = int(n_step)
        self.reward_scale = float(reward_scale)
        self._gamma_powers_K = self.gamma ** np.arange(self.n_step + 1, dtype=np.float64)
        self.device = torch.device(device)
        self._transfer = HostTransfer(self.device)  # pinned staging + async copy on a GPU
        self.sampler: Sampler = sampler if sampler is not None else UniformSampler(C, N)
        self.obs = np.zeros((C, N, D), dtype=np.float32)
        self.next_obs = np.zeros((C, N, D), dtype=np.float32)
        self.actions = np.zeros((C, N), dtype=np.int64)
        self.rewards = np.zeros((C, N), dtype=np.float32)
        self.terminated = np.zeros((C, N), dtype=bool)
        self.truncated = np.zeros((C, N), dtype=bool)
        self.pos = 0
        """Row the next :meth:`add` writes."""
        self.filled_rows = 0
        """Rows holding data (capacity_per_env once the ring has wrapped)."""
        self._discounts_B: torch.Tensor | None = None

    @classmethod
    def from_config(
        cls, config: AgentConfig, n_envs: int, obs_dim: int, device: str | torch.device = "cpu"
    ) -> ReplayBuffer:
        """``config.buffer_size // n_envs`` rows of ``n_envs`` envs; prioritized and n-step as
        the config says."""
        from nexlify.agent.sum_tree import PrioritizedSampler

        capacity = config.capacity_per_env(n_envs)
        sampler: Sampler | None = None
        if config.prioritized_replay:
            sampler = PrioritizedSampler(capacity, n_envs, config.per_alpha, config.per_eps)
            sampler.beta = config.per_beta_start
        return cls(
            capacity,
            n_envs,
            obs_dim,
            gamma=config.gamma,
            device=device,
            sampler=sampler,
            n_step=config.n_step,
            reward_scale=config.reward_scale,
        )

    @property
    def capacity(self) -> int:
        """Transitions the buffer holds when full."""
        return self.capacity_per_env * self.n_envs

    def __len__(self) -> int:
        """Transitions stored."""
        return self.filled_rows * self.n_envs

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Write one transition per env ([N, D], [N], [N], [N, D], [N], [N]) in place.

        ``next_obs`` is the true next observation: where an env's episode ended this step (either
        way) it is that episode's final observation, not the reset observation.
        """
        N, D = self.n_envs, self.obs_dim
        if obs.shape != (N, D) or next_obs.shape != (N, D):
            raise ValueError(
                f"obs {obs.shape} and next_obs {next_obs.shape} must both be (n_envs, obs_dim)"
                f" = {(N, D)}"
            )
        for name, arr in (
            ("actions", actions),
            ("rewards", rewards),
            ("terminated", terminated),
            ("truncated", truncated),
        ):
            if arr.shape != (N,):
                raise ValueError(f"{name} has shape {arr.shape}; expected (n_envs,) = ({N},)")
        row = self.pos
        self.obs[row] = obs
        self.next_obs[row] = next_obs
        self.actions[row] = actions
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        self.pos = (row + 1) % self.capacity_per_env
        self.filled_rows = max(self.filled_rows, row + 1)
        self.sampler.on_add(row)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        """``batch_size`` transitions from the filled slots, as tensors on the buffer's device."""
        idx, weights = self.sampler.sample_indices(batch_size, rng)
        CN, D = self.capacity, self.obs_dim
        # Reshapes of contiguous arrays are views; take() gathers into fresh arrays (so a batch
        # never aliases the storage or another batch) and is ~3x faster than fancy indexing.
        obs = self.obs.reshape(CN, D).take(idx, axis=0)
        actions = self.actions.reshape(CN).take(idx)
        if self.n_step == 1:
            last = idx
            rewards = self.rewards.reshape(CN).take(idx)
            discounts = self._discounts(batch_size)
        else:
            last, rewards, discounts_np = self.n_step_returns(idx)
            discounts = self._to_device(discounts_np)
        if self.reward_scale != 1.0:
            rewards = rewards * np.float32(self.reward_scale)
        next_obs = self.next_obs.reshape(CN, D).take(last, axis=0)
        terminated = self.terminated.reshape(CN).take(last).astype(np.float32)
        return ReplayBatch(
            obs_BD=self._to_device(obs),
            actions_B=self._to_device(actions),
            rewards_B=self._to_device(rewards),
            next_obs_BD=self._to_device(next_obs),
            terminated_B=self._to_device(terminated),
            discounts_B=discounts,
            indices=idx,
            weights_B=None if weights is None else self._to_device(weights.astype(np.float32)),
        )

    def n_step_returns(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat index of the last step used, discounted reward sum, gamma ** steps) per sample.

        Looks down each sample's env column for up to ``n_step`` rows, stopping after the first
        row whose episode ended (terminated or truncated) and before rows not yet written after
        it (the ring's newest row is ``pos - 1``). Unscaled rewards, float32; discounts float32.
        """
        return _n_step_returns(
            self.rewards, self.terminated, self.truncated, np.ascontiguousarray(idx, np.int64),
            self.pos, self.n_step, self._gamma_powers_K,
        )  # fmt: skip

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Pass new TD errors of sampled transitions to the sampler (no-op for uniform)."""
        self.sampler.update_priorities(indices, td_errors)

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        return self._transfer(arr)

    def _discounts(self, batch_size: int) -> torch.Tensor:
        # Constant for 1-step returns: build once per batch size; the loss never writes to it.
        d = self._discounts_B
        if d is None or d.shape[0] != batch_size:
            d = torch.full((batch_size,), self.gamma, dtype=torch.float32, device=self.device)
            self._discounts_B = d
        return d

    def state_dict(self) -> dict[str, Any]:
        """Storage arrays (by reference, not copied), ring pointers and the sampler's state."""
        state: dict[str, Any] = {name: getattr(self, name) for name in REPLAY_FIELDS}
        state.update(pos=self.pos, filled_rows=self.filled_rows, sampler=self.sampler.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (same layout, else CheckpointError)."""
        missing = [k for k in (*REPLAY_FIELDS, "pos", "filled_rows", "sampler") if k not in state]
        if missing:
            raise CheckpointError(f"replay state: missing keys {missing}")
        for name in REPLAY_FIELDS:
            mine: np.ndarray = getattr(self, name)
            theirs = np.asarray(state[name])
            if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                raise CheckpointError(
                    f"replay state: {name} is {theirs.dtype}{list(theirs.shape)}, this buffer "
                    f"needs {mine.dtype}{list(mine.shape)} (capacity_per_env, n_envs, ...)"
                )
        pos, filled = int(state["pos"]), int(state["filled_rows"])
        if not (0 <= pos < self.capacity_per_env and 0 <= filled <= self.capacity_per_env):
            raise CheckpointError(
                f"replay state: pos={pos} / filled_rows={filled} outside capacity_per_env="
                f"{self.capacity_per_env}"
            )
        for name in REPLAY_FIELDS:
            np.copyto(getattr(self, name), state[name])
        self.pos, self.filled_rows = pos, filled
        self.sampler.load_state_dict(state["sampler"])
