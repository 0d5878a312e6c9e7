"""The DQN-family TD targets and losses, in one place: the plain-torch reference.

Shapes are suffixed: B = batch, A = actions, Z = atoms (C51) or quantiles (QR-DQN). Nothing here
loops over the batch.

- DQN: :func:`td_target` and :func:`dqn_loss`. Double DQN changes which next action is valued:
  argmax of the online network, value of the target network (:func:`next_actions`).
- n-step returns arrive through ``rewards_B`` (the discounted n-step sum) and ``discounts_B``
  (gamma ** k for the k steps actually summed); prioritized replay through ``weights_B`` and the
  per-sample ``td_error_B`` (what priorities are made from).
- C51: :func:`projected_target_from_logits` makes the target distribution (softmax, a* when it
  is not given, then :func:`project_distribution`, which projects ``r + discount * z`` onto the
  fixed support with scatter-adds, no loop); :func:`c51_loss` is the cross-entropy to it.
- QR-DQN: :func:`quantile_huber_loss`.
- The ``*_taken_loss`` variants take the online output of the taken actions only; the others
  gather it from the full output.

The compiled CPU versions (``agent.cpu_kernels: auto``) are in :mod:`nexlify.agent.fast_path`
and are tested against these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DQNLoss:
    """Result of a loss function: the scalar to minimise and per-sample terms for stats/PER."""

    loss: torch.Tensor
    """Scalar loss (mean over the batch, importance-weighted when weights were given)."""
    q_taken_B: torch.Tensor
    """(Expected) Q(s, a) of the actions taken."""
    td_error_B: torch.Tensor
    """Detached per-sample error: target - Q(s, a) for scalar Q, the per-sample loss for
    distributional heads (cross-entropy / quantile loss); prioritized replay uses its size."""

    def backward(self) -> None:
        """The gradients of ``loss`` into the ``.grad`` of the parameters it depends on (a loss
        whose gradients were computed with it passes those on instead)."""
        self.loss.backward()


def next_actions(
    next_q_target_BA: torch.Tensor, next_q_online_BA: torch.Tensor | None
) -> torch.Tensor:
    """a* in s': argmax of the online Q (double DQN) or of the target Q (plain DQN), int64 [B]."""
    chooser_BA = next_q_target_BA if next_q_online_BA is None else next_q_online_BA
    return chooser_BA.argmax(dim=1)


def td_target(
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    next_q_target_BA: torch.Tensor,
    next_q_online_BA: torch.Tensor | None = None,
) -> torch.Tensor:
    """TD target ``r + discount * (1 - terminated) * Q_target(s', a*)``.

    a* = argmax Q_target(s', .) (plain DQN) or argmax Q_online(s', .) when ``next_q_online_BA``
    is given (double DQN). ``terminated_B`` is 0/1 float. Truncated transitions are *not*
    terminated: they bootstrap from ``Q_target(s', .)`` where ``s'`` is the true final observation.
    """
    a_B = next_actions(next_q_target_BA, next_q_online_BA)
    next_q_B = next_q_target_BA.gather(1, a_B.unsqueeze(1)).squeeze(1)
    return rewards_B + discounts_B * (1.0 - terminated_B) * next_q_B


def dqn_loss(
    q_BA: torch.Tensor,
    actions_B: torch.Tensor,
    target_B: torch.Tensor,
    huber_delta: float,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """Smooth-L1 (Huber, beta = ``huber_delta``) loss between Q(s, a) and a fixed TD target.

    ``target_B`` must carry no gradient (compute it under ``torch.no_grad``). With beta=delta the
    loss is 0.5 * x**2 / delta for |x| < delta and |x| - delta / 2 above, i.e. Huber / delta: the
    gradient is clipped to +-1 as in the DQN paper, whatever delta is.
    """
    q_taken_B = q_BA.gather(1, actions_B.unsqueeze(1)).squeeze(1)
    if weights_B is None:
        loss = F.smooth_l1_loss(q_taken_B, target_B, beta=huber_delta)
    else:
        per_sample_B = F.smooth_l1_loss(q_taken_B, target_B, beta=huber_delta, reduction="none")
        loss = (weights_B * per_sample_B).mean()
    td_error_B = (target_B - q_taken_B).detach()
    return DQNLoss(loss=loss, q_taken_B=q_taken_B, td_error_B=td_error_B)


def project_distribution(
    next_probs_BZ: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    *,
    v_min: float | None = None,
    v_max: float | None = None,
) -> torch.Tensor:
    """C51 target: the distribution of ``r + discount * (1 - terminated) * z`` on the support.

    Each shifted atom ``Tz_j`` (clipped to [v_min, v_max]) sits at fractional position
    ``b_j = (Tz_j - v_min) / dz`` and gives its mass ``p_j`` to the atoms either side of it:
    ``(1 - frac(b_j))`` to ``floor(b_j)`` and ``frac(b_j)`` to ``floor(b_j) + 1``, so an atom that
    lands exactly on a support point gives it all its mass. Two ``scatter_add`` calls along the
    atoms: no loop, O(B * Z) work. ``v_min``/``v_max`` default to the support's ends (read from
    the tensor, which waits for the device); the learner passes them from its config.
    """
    Z = next_probs_BZ.shape[1]
    if v_min is None or v_max is None:
        v_min, v_max = float(support_Z[0]), float(support_Z[-1])
    delta_z = (v_max - v_min) / (Z - 1)
    shift_B1 = (discounts_B * (1.0 - terminated_B)).unsqueeze(1)
    # b = (r + shift * z - v_min) / dz, clipped to the support: the clip of Tz in atom units.
    b_BZ = torch.addcmul((rewards_B - v_min).unsqueeze(1), shift_B1, support_Z)
    b_BZ = b_BZ.mul_(1.0 / delta_z).clamp_(0.0, Z - 1)
    # The lower atom stops at Z - 2 so that the upper one always exists; b = Z - 1 then gives
    # all its mass to the upper atom, as it should.
    lower_BZ = b_BZ.floor().clamp_(max=Z - 2)
    upper_mass_BZ = next_probs_BZ * (b_BZ - lower_BZ)
    lower_idx_BZ = lower_BZ.long()
    target_BZ = torch.zeros_like(next_probs_BZ)
    target_BZ.scatter_add_(1, lower_idx_BZ, next_probs_BZ - upper_mass_BZ)
    return target_BZ.scatter_add_(1, lower_idx_BZ + 1, upper_mass_BZ)


def greedy_projected_target(
    next_probs_BAZ: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    *,
    v_min: float,
    v_max: float,
) -> torch.Tensor:
    """C51 target without double DQN: :func:`project_distribution` of the distribution of
    a* = argmax_a sum_z p(s', a, z) z, from the target network's probabilities for every action.
    """
    B, _, Z = next_probs_BAZ.shape
    a_B = (next_probs_BAZ @ support_Z).argmax(dim=1)
    next_probs_BZ = next_probs_BAZ.gather(1, a_B.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)
    return project_distribution(
        next_probs_BZ, rewards_B, discounts_B, terminated_B, support_Z, v_min=v_min, v_max=v_max
    )


def projected_target_from_logits(
    next_logits: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    *,
    v_min: float,
    v_max: float,
) -> torch.Tensor:
    """The C51 target from the target network's logits: softmax along the atoms, then
    :func:`project_distribution` of ``next_logits`` [B, Z] (a* already chosen, as with double
    DQN) or :func:`greedy_projected_target` of ``next_logits`` [B, A, Z]."""
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    if next_logits.dim() == 2:
        return project_distribution(next_logits.softmax(dim=1), *step, v_min=v_min, v_max=v_max)
    return greedy_projected_target(next_logits.softmax(dim=2), *step, v_min=v_min, v_max=v_max)


def c51_loss(
    logits_BAZ: torch.Tensor,
    actions_B: torch.Tensor,
    target_probs_BZ: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """Cross-entropy between the projected target and the predicted distribution of (s, a)."""
    B, _, Z = logits_BAZ.shape
    logits_BZ = logits_BAZ.gather(1, actions_B.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)
    return c51_taken_loss(logits_BZ, target_probs_BZ, support_Z, weights_B)


def c51_taken_loss(
    logits_BZ: torch.Tensor,
    target_probs_BZ: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """:func:`c51_loss` given the logits of the taken actions only (``forward_taken_raw``):
    per sample ``-sum_z target * log softmax(logits)``; Q(s, a) is the softmax's mean."""
    log_probs_BZ = F.log_softmax(logits_BZ, dim=1)
    per_sample_B = -(target_probs_BZ * log_probs_BZ).sum(dim=1)
    loss = per_sample_B.mean() if weights_B is None else (weights_B * per_sample_B).mean()
    q_taken_B = log_probs_BZ.detach().exp() @ support_Z
    return DQNLoss(loss=loss, q_taken_B=q_taken_B, td_error_B=per_sample_B.detach())


def quantile_midpoints(n_quantiles: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """tau_i = (2i + 1) / (2N), the quantile levels QR-DQN estimates, float32 [Z]."""
    return (torch.arange(n_quantiles, device=device, dtype=torch.float32) * 2 + 1) / (
        2 * n_quantiles
    )


def quantile_huber_loss(
    quantiles_BAZ: torch.Tensor,
    actions_B: torch.Tensor,
    target_quantiles_BZ: torch.Tensor,
    kappa: float,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """QR-DQN loss: quantile Huber over all (prediction i, target j) pairs, summed over i.

    rho_tau(u) = |tau_i - 1{u < 0}| * Huber_kappa(u) / kappa with u = target_j - theta_i; the
    mean over j and the sum over i give each sample's loss (Dabney et al. 2018).
    """
    B, _, Z = quantiles_BAZ.shape
    theta_BZ = quantiles_BAZ.gather(1, actions_B.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)
    return quantile_huber_taken_loss(theta_BZ, target_quantiles_BZ, kappa, weights_B)


def quantile_huber_taken_loss(
    theta_BZ: torch.Tensor,
    target_quantiles_BZ: torch.Tensor,
    kappa: float,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """:func:`quantile_huber_loss` given the quantiles of the taken actions only."""
    Z = theta_BZ.shape[1]
    u_BIJ = target_quantiles_BZ.unsqueeze(1) - theta_BZ.unsqueeze(2)
    huber_BIJ = F.smooth_l1_loss(
        theta_BZ.unsqueeze(2).expand_as(u_BIJ),
        target_quantiles_BZ.unsqueeze(1).expand_as(u_BIJ),
        beta=kappa,
        reduction="none",
    )
    tau_1I1 = quantile_midpoints(Z, theta_BZ.device).view(1, Z, 1)
    rho_BIJ = (tau_1I1 - (u_BIJ.detach() < 0).to(u_BIJ.dtype)).abs() * huber_BIJ
    per_sample_B = rho_BIJ.mean(dim=2).sum(dim=1)
    loss = per_sample_B.mean() if weights_B is None else (weights_B * per_sample_B).mean()
    return DQNLoss(
        loss=loss, q_taken_B=theta_BZ.detach().mean(dim=1), td_error_B=per_sample_B.detach()
    )
