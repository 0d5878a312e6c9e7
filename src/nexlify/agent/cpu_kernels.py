"""Compiled CPU loops (numba) for the distributional learner's hot spots.

Each kernel does the arithmetic of a tensor expression in :mod:`nexlify.agent.losses` or
:mod:`nexlify.agent.networks` in one pass over float32 numpy views of CPU tensors. At the sizes
the learner runs (B = 128, A = 7, Z = 51) the tensor versions are a dozen or more small
operations whose per-call cost exceeds their arithmetic; the tensor versions stay the reference
and run on other devices. Loops run over the batch inside compiled code only.

Shapes are suffixed as in the losses: B batch, A actions, Z atoms, H hidden units.
"""

from __future__ import annotations

import numba
import numpy as np

# Reassociation lets LLVM vectorise the dot products (changing the summation order, so results
# match the tensor versions to float rounding); the no-NaN/no-inf flags are left off so that a
# diverging network still shows NaN in its loss.
_FASTMATH = {"reassoc", "contract"}


@numba.njit(cache=True, fastmath=_FASTMATH)
def taken_linear_forward(
    h_BH: np.ndarray, weight_AZH: np.ndarray, bias_AZ: np.ndarray, actions_B: np.ndarray,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """out_BZ[b] = weight_AZH[a_b] @ h_BH[b] + bias_AZ[a_b]."""
    B, H = h_BH.shape
    A, Z, _ = weight_AZH.shape
    for b in range(B):
        a = actions_B[b]
        if a < 0 or a >= A:
            raise IndexError("an action index is outside the network's actions")
        for z in range(Z):
            acc = np.float32(0.0)
            for k in range(H):
                acc += h_BH[b, k] * weight_AZH[a, z, k]
            out_BZ[b, z] = acc + bias_AZ[a, z]


@numba.njit(cache=True, fastmath=_FASTMATH)
def taken_linear_backward(
    grad_BZ: np.ndarray, h_BH: np.ndarray, weight_AZH: np.ndarray, actions_B: np.ndarray,
    grad_h_BH: np.ndarray, grad_w_AZH: np.ndarray, grad_b_AZ: np.ndarray,
) -> None:  # fmt: skip
    """Gradients of :func:`taken_linear_forward`; grad_w/grad_b must start at zero.

    They accumulate over the batch in batch order, so the result is deterministic.
    """
    B, H = h_BH.shape
    Z = weight_AZH.shape[1]
    acc_H = np.empty(H, dtype=np.float32)
    for b in range(B):
        a = actions_B[b]
        acc_H[:] = 0.0
        for z in range(Z):
            g = grad_BZ[b, z]
            grad_b_AZ[a, z] += g
            for k in range(H):
                acc_H[k] += g * weight_AZH[a, z, k]
                grad_w_AZH[a, z, k] += g * h_BH[b, k]
        grad_h_BH[b, :] = acc_H


@numba.njit(cache=True)
def _project_row(
    probs_Z: np.ndarray, reward: np.float32, shift: np.float32, support_Z: np.ndarray,
    lowest: np.float32, inv_dz: np.float32, out_Z: np.ndarray,
) -> None:  # fmt: skip
    # losses.project_distribution for one row, in the same float32 steps.
    Z = probs_Z.shape[0]
    zero, top = np.float32(0.0), np.float32(Z - 1)
    offset = reward - lowest
    out_Z[:] = 0.0
    for j in range(Z):
        pos = min(max((offset + shift * support_Z[j]) * inv_dz, zero), top)
        lower = min(np.int64(np.floor(pos)), Z - 2)
        upper_mass = probs_Z[j] * (pos - np.float32(lower))
        out_Z[lower] += probs_Z[j] - upper_mass
        out_Z[lower + 1] += upper_mass


@numba.njit(cache=True)
def project(
    next_probs_BZ: np.ndarray, rewards_B: np.ndarray, discounts_B: np.ndarray,
    terminated_B: np.ndarray, support_Z: np.ndarray, v_min: float, delta_z: float,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """losses.project_distribution into out_BZ."""
    lowest, inv_dz = np.float32(v_min), np.float32(1.0 / delta_z)
    for b in range(next_probs_BZ.shape[0]):
        shift = discounts_B[b] * (np.float32(1.0) - terminated_B[b])
        _project_row(next_probs_BZ[b], rewards_B[b], shift, support_Z, lowest, inv_dz, out_BZ[b])


@numba.njit(cache=True, fastmath=_FASTMATH)
def greedy_project(
    next_probs_BAZ: np.ndarray, rewards_B: np.ndarray, discounts_B: np.ndarray,
    terminated_B: np.ndarray, support_Z: np.ndarray, v_min: float, delta_z: float,
    out_BZ: np.ndarray,
) -> None:  # fmt: skip
    """losses.greedy_projected_target: a* = argmax_a sum_z p z (first on ties), projected."""
    B, A, Z = next_probs_BAZ.shape
    lowest, inv_dz = np.float32(v_min), np.float32(1.0 / delta_z)
    for b in range(B):
        best_a, best_q = 0, np.float32(-np.inf)
        for a in range(A):
            q = np.float32(0.0)
            for z in range(Z):
                q += next_probs_BAZ[b, a, z] * support_Z[z]
            if q > best_q:
                best_a, best_q = a, q
        shift = discounts_B[b] * (np.float32(1.0) - terminated_B[b])
        _project_row(
            next_probs_BAZ[b, best_a], rewards_B[b], shift, support_Z, lowest, inv_dz, out_BZ[b]
        )
