"""A vectorized sum tree over flat replay indices, and the proportional prioritized sampler.

The tree is one float64 array of ``2 * L`` nodes (L = capacity rounded up to a power of two):
node 1 is the root, node k has children 2k and 2k + 1, leaves are ``L .. 2L - 1``. Updates and
sampling take a whole batch per call (compiled with numba, as the env kernels are: a numpy
version costs about 18 array operations per tree level, which at batch 128 is most of a
gradient step's replay overhead); duplicate indices in an
update are collapsed first (the last value given wins, as if the updates ran in order), as
Dopamine does, and only then are the parents recomputed from the written leaves.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True)
def _find(nodes: np.ndarray, depth: int, n_leaves: int, u: np.ndarray) -> np.ndarray:
    out = np.empty(u.shape[0], dtype=np.int64)
    for k in range(u.shape[0]):
        node = 1
        x = u[k]
        for _ in range(depth):
            left = 2 * node
            if x >= nodes[left]:
                x -= nodes[left]
                node = left + 1
            else:
                node = left
        out[k] = node - n_leaves
    return out


@numba.njit(cache=True)
def _set(nodes: np.ndarray, depth: int, n_leaves: int, idx: np.ndarray, vals: np.ndarray) -> None:
    # Leaves first, in order (so a repeated index keeps its last value), then each written
    # leaf's path to the root; a parent on several paths gets the same sum every time.
    for k in range(idx.shape[0]):
        nodes[n_leaves + idx[k]] = vals[k]
    for k in range(idx.shape[0]):
        node = (n_leaves + idx[k]) >> 1
        for _ in range(depth):
            nodes[node] = nodes[2 * node] + nodes[2 * node + 1]
            node >>= 1


@numba.njit(cache=True)
def _weights(
    nodes: np.ndarray, n_leaves: int, idx: np.ndarray, count: int, beta: float
) -> np.ndarray:
    total = nodes[1]
    out = np.empty(idx.shape[0], dtype=np.float64)
    largest = 0.0
    for k in range(idx.shape[0]):
        prob = max(nodes[n_leaves + idx[k]] / total, 1e-12)
        out[k] = (count * prob) ** (-beta)
        largest = max(largest, out[k])
    for k in range(idx.shape[0]):
        out[k] /= largest
    return out


class SumTree:
    """Non-negative values at ``capacity`` leaves with O(log n) vectorized update and search."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self.capacity = capacity
        self.n_leaves = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.n_leaves.bit_length() - 1
        self.nodes = np.zeros(2 * self.n_leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaf values."""
        return float(self.nodes[1])

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Leaf values at ``indices``."""
        return self.nodes[self.n_leaves + np.asarray(indices, dtype=np.int64)]

    def set(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Leaf ``indices[k]`` <- ``values[k]``; for a repeated index the last value wins."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        vals = np.asarray(values, dtype=np.float64).ravel()
        if idx.shape != vals.shape:
            raise ValueError(f"{idx.shape[0]} indices but {vals.shape[0]} values")
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"sum tree index outside [0, {self.capacity})")
        if not np.all(np.isfinite(vals)) or vals.min() < 0:
            raise ValueError("sum tree values must be finite and >= 0")
        _set(self.nodes, self.depth, self.n_leaves, idx, vals)

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative range holds each prefix sum (values in [0, total))."""
        u = np.ascontiguousarray(prefix_sums, dtype=np.float64).ravel()
        return _find(self.nodes, self.depth, self.n_leaves, u)


class PrioritizedSampler:
    """Proportional prioritized replay (Schaul et al. 2016) over flat indices ``row * N + env``.

    P(i) = p_i^alpha / sum_k p_k^alpha with p_i = |TD error| + eps; new transitions get the
    largest priority seen so far. Importance weights w_i = (n * P(i)) ** -beta, divided by the
    batch's largest weight; the trainer anneals ``beta`` towards 1. Sampling is stratified: one
    draw per equal slice of the total mass.
    """

    def __init__(self, capacity_per_env: int, n_envs: int, alpha: float, eps: float) -> None:
        self.capacity_per_env = capacity_per_env
        self.n_envs = n_envs
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.beta = 0.4
        """Importance-weight exponent of the next :meth:`sample_indices` (set by the trainer)."""
        self.tree = SumTree(capacity_per_env * n_envs)
        self.max_priority = 1.0
        self.filled_rows = 0

    def on_add(self, row: int) -> None:
        """The N transitions of ``row`` start at the largest priority seen so far."""
        self.filled_rows = max(self.filled_rows, row + 1)
        flat = row * self.n_envs + np.arange(self.n_envs, dtype=np.int64)
        self.tree.set(flat, np.full(self.n_envs, self.max_priority**self.alpha))

    def sample_indices(
        self, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` flat indices drawn in proportion to priority, and their importance weights."""
        total = self.tree.total
        if self.filled_rows == 0 or total <= 0:
            raise ValueError("cannot sample from an empty replay buffer")
        bounds = (np.arange(n) + rng.random(n)) * (total / n)
        idx = self.tree.find(np.minimum(bounds, np.nextafter(total, 0.0)))
        # Float rounding can step past the last filled leaf; those are all zero-mass leaves.
        filled = self.filled_rows * self.n_envs
        idx = np.minimum(idx, filled - 1)
        return idx, self.importance_weights(idx)

    def importance_weights(self, idx: np.ndarray) -> np.ndarray:
        """(n * P(i)) ** -beta / max over the batch, float64 [B]."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        count = self.filled_rows * self.n_envs
        return _weights(self.tree.nodes, self.tree.n_leaves, idx, count, self.beta)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Priorities |td_error| + eps of sampled indices (a repeated index takes its last)."""
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max(initial=0.0)))
        self.tree.set(indices, priorities**self.alpha)

    def state_dict(self) -> dict[str, Any]:
        """Tree nodes, max priority, beta and filled rows."""
        return {
            "filled_rows": self.filled_rows,
            "nodes": self.tree.nodes,
            "max_priority": self.max_priority,
            "beta": self.beta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.filled_rows = int(state["filled_rows"])
        np.copyto(self.tree.nodes, state["nodes"])
        self.max_priority = float(state["max_priority"])
        self.beta = float(state["beta"])
