"""The DQN-family TD target and loss, in one place.

Shapes are suffixed: B = batch, A = actions. Nothing here loops over the batch.

The Rainbow parts of issue 4 slot in here as options of these functions: double DQN changes how
``next_q_B`` is picked (argmax of the online net, value of the target net), n-step returns arrive
through ``discounts_B`` (gamma ** n per sample) and ``rewards_B`` (the n-step sum), prioritized
replay through ``weights_B`` and the returned ``td_error_B``; distributional heads get their own
loss function next to ``dqn_loss``.
"""

# Fields carry their shape as a suffix (q_taken_B), as STYLE.md rule 3 asks.

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DQNLoss:
    """Result of :func:`dqn_loss`: the scalar to minimise and per-sample terms for stats/PER."""

    loss: torch.Tensor
    """Scalar loss (mean over the batch, importance-weighted when weights were given)."""
    q_taken_B: torch.Tensor
    """Q(s, a) of the actions taken, with gradient."""
    td_error_B: torch.Tensor
    """target - Q(s, a), detached (what prioritized replay turns into priorities)."""


def td_target(
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    next_q_target_BA: torch.Tensor,
) -> torch.Tensor:
    """One-step TD target ``r + discount * (1 - terminated) * max_a' Q_target(s', a')``.

    ``terminated_B`` is 0/1 float. Truncated transitions are *not* terminated: they bootstrap
    from ``Q_target(s', .)`` where ``s'`` is the episode's true final observation.
    """
    next_q_B = next_q_target_BA.max(dim=1).values
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
