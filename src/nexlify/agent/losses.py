"""The DQN-family TD targets and losses, in one place.

Shapes are suffixed: B = batch, A = actions, Z = atoms (C51) or quantiles (QR-DQN). Nothing here
loops over the batch.

- Double DQN changes which next action is valued: argmax of the online network, value of the
  target network (:func:`next_actions`).
- n-step returns arrive through ``rewards_B`` (the discounted n-step sum) and ``discounts_B``
  (gamma ** k for the k steps actually summed); prioritized replay through ``weights_B`` and the
  per-sample ``td_error_B`` (what priorities are made from).
- C51: :func:`project_distribution` projects ``r + discount * z`` onto the fixed support without a
  loop (scatter-adds along the atoms), :func:`c51_loss` is the cross-entropy to that target.
- QR-DQN: :func:`quantile_huber_loss`.
- The ``*_taken_loss`` variants take the online output of the taken actions only (what
  ``QNetwork.forward_taken_raw`` computes); the others gather it from the full output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nexlify.agent import cpu_kernels
from nexlify.agent.networks import TakenHead, cpu_array


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
    computed_grads: ComputedGrads | None = None
    """For a loss whose gradients were computed with it (:func:`c51_head_loss`), those
    gradients; ``loss`` then has no graph of its own and :meth:`backward` passes them on."""

    def backward(self) -> None:
        """The gradients of ``loss`` into the ``.grad`` of the parameters it depends on:
        ``loss.backward()``, or the :attr:`computed_grads` passed on through the rest of the
        graph (the same gradients, bit for bit)."""
        if self.computed_grads is None:
            self.loss.backward()
        else:
            self.computed_grads.backward()


class ComputedGrads:
    """Gradients of a loss with respect to some tensors of its graph, computed with the loss.

    :meth:`backward` hands them to ``torch.autograd.backward``, which carries them through the
    graphs of those tensors (the torso; a noisy or dueling output layer) into the leaves.
    The compiled C51 head uses this instead of a ``torch.autograd.Function``: at its size the
    Function's own cost (applying it, saving tensors, calling back into Python from the
    backward pass) was larger than the compiled arithmetic it wraps (about 70 us of a 1.5 ms
    learner step; see :func:`c51_head_loss`).

    As autograd does for the tensors it saves, :meth:`backward` refuses to run when one of the
    tensors was changed in place after the loss (say, an optimizer step in between): the
    gradients would be those of the old values. And as a graph without ``retain_graph`` is, it
    is used up by :meth:`backward`: it lets go of its gradients (which may now be the leaves'
    ``.grad`` themselves) and a second call raises.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...]):
        self.tensors = tensors
        self.grads: tuple[torch.Tensor, ...] | None = grads
        self._versions = tuple(t._version for t in tensors)

    def backward(self) -> None:
        """``torch.autograd.backward(tensors, grads)``, after checking nothing changed since;
        once only."""
        if self.grads is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time: the C51 head's gradients "
                "were already passed on (one backward per loss)"
            )
        for t, version in zip(self.tensors, self._versions, strict=True):
            if t._version != version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: a {list(t.shape)} tensor is at version {t._version}"
                    f"; expected version {version} (the C51 head's gradients were computed "
                    "with its loss)"
                )
        pairs, self.grads = zip(self.tensors, self.grads, strict=True), None
        rest = [(t, g) for t, g in pairs if not _store_as_grad(t, g)]
        if rest:
            torch.autograd.backward([t for t, _ in rest], [g for _, g in rest])


def _store_as_grad(leaf: torch.Tensor, grad: torch.Tensor) -> bool:
    """``leaf.grad = grad`` where that is what autograd's accumulation does with a gradient
    nothing else holds (:class:`ComputedGrads` lets go of its own): a leaf that wants a
    gradient, has none yet and no hooks, and ``grad`` laid out as the leaf is; autograd then
    keeps the incoming tensor as ``.grad``. Saves the engine's pass for the output layer's
    weight and bias (about 15 us of a C51 learner step). False (nothing done) otherwise."""
    if not (
        leaf.is_leaf
        and leaf.requires_grad
        and leaf.grad is None
        and not leaf._backward_hooks
        and not leaf._post_accumulate_grad_hooks
        and grad.dtype == leaf.dtype
        and grad.device == leaf.device
        and grad.shape == leaf.shape
        and grad.stride() == leaf.stride()
    ):
        return False
    leaf.grad = grad
    return True


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
    the tensor, which waits for the device); the learner passes them from its config. CPU
    float32 tensors go through ``cpu_kernels.project``, the same arithmetic in one pass.
    """
    Z = next_probs_BZ.shape[1]
    if v_min is None or v_max is None:
        v_min, v_max = float(support_Z[0]), float(support_Z[-1])
    delta_z = (v_max - v_min) / (Z - 1)
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    compiled = _compiled_target(cpu_kernels.project, next_probs_BZ, *step, v_min, v_max)
    if compiled is not None:
        return compiled
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
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    compiled = _compiled_target(cpu_kernels.greedy_project, next_probs_BAZ, *step, v_min, v_max)
    if compiled is not None:
        return compiled
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
    """The C51 target from logits: softmax along the atoms, then :func:`project_distribution`
    of ``next_logits`` [B, Z] (a* already chosen, as with double DQN) or
    :func:`greedy_projected_target` of ``next_logits`` [B, A, Z]. For the latter, CPU float32
    tensors go through ``cpu_kernels.softmax_greedy_project``, which never stores the B * A * Z
    probabilities (about a third faster at B = 128, A = 7, Z = 51; for [B, Z] torch's softmax
    is already the faster way)."""
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    if next_logits.dim() == 3:
        kernel = cpu_kernels.softmax_greedy_project
        compiled = _compiled_target(kernel, next_logits, *step, v_min, v_max)
        if compiled is not None:
            return compiled
    if next_logits.dim() == 2:
        return project_distribution(next_logits.softmax(dim=1), *step, v_min=v_min, v_max=v_max)
    return greedy_projected_target(next_logits.softmax(dim=2), *step, v_min=v_min, v_max=v_max)


def _compiled_target(
    kernel: Callable[..., None],
    x: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    v_min: float,
    v_max: float,
) -> torch.Tensor | None:
    """A C51 target [B, Z] from ``kernel`` (a ``cpu_kernels`` projection taking the arrays,
    v_min, the atom spacing and the output) when every tensor is CPU float32; else None."""
    arrays = _cpu_float32(x, rewards_B, discounts_B, terminated_B, support_Z)
    if arrays is None:
        return None
    Z = x.shape[-1]
    target_BZ = torch.empty(x.shape[0], Z, dtype=torch.float32)
    kernel(*arrays, v_min, (v_max - v_min) / (Z - 1), target_BZ.numpy())
    return target_BZ


def _on_cpu_float32(*tensors: torch.Tensor | None) -> bool:
    """Every tensor given (None: absent, skipped) is a float32 CPU tensor: cpu_kernels' input."""
    return all(x is None or (x.device.type == "cpu" and x.dtype == torch.float32) for x in tensors)


def _cpu_float32(*tensors: torch.Tensor) -> list[np.ndarray] | None:
    """Contiguous numpy views when every tensor is a float32 CPU tensor (cpu_kernels' input)."""
    if _on_cpu_float32(*tensors):
        return [cpu_array(x) for x in tensors]
    return None


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
    """:func:`c51_loss` given the logits of the taken actions only (``forward_taken_raw``).

    CPU float32 tensors outside autocast go through one compiled pass each way
    (:class:`_C51CrossEntropy`); other devices and dtypes run the tensor expression below.
    """
    if _on_cpu_float32(
        logits_BZ, target_probs_BZ, support_Z, weights_B
    ) and not torch.is_autocast_enabled("cpu"):
        loss, per_sample_B, q_taken_B = _C51CrossEntropy.apply(
            logits_BZ, target_probs_BZ, support_Z, weights_B
        )
        return DQNLoss(loss=loss, q_taken_B=q_taken_B, td_error_B=per_sample_B)
    log_probs_BZ = F.log_softmax(logits_BZ, dim=1)
    per_sample_B = -(target_probs_BZ * log_probs_BZ).sum(dim=1)
    loss = per_sample_B.mean() if weights_B is None else (weights_B * per_sample_B).mean()
    q_taken_B = log_probs_BZ.detach().exp() @ support_Z
    return DQNLoss(loss=loss, q_taken_B=q_taken_B, td_error_B=per_sample_B.detach())


def c51_head_loss(
    head: TakenHead,
    actions_B: torch.Tensor,
    target_probs_BZ: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """:func:`c51_taken_loss` of the logits ``head`` gives for ``actions_B``
    (``QNetwork.taken_head``), bit for bit the same as ``head.logits`` followed by
    :func:`c51_taken_loss`, gradients included.

    For CPU float32 tensors outside autocast the output layer, the loss and their gradients
    run as one compiled call (``cpu_kernels.c51_head_loss_and_grads``) when the loss is made,
    and the result carries the gradients of the torso output, the layer's weight and bias and
    the dueling stream as :class:`ComputedGrads`: call :meth:`DQNLoss.backward` (``loss``
    itself has no graph). Measured against the same kernels inside a ``torch.autograd
    .Function`` (forward and backward, one call each), in bench_rainbow's learner loop, four
    alternating pairs of processes: the fastest PER + 3-step + C51 step went from 1405-1480 to
    1332-1370 us, its median cost over plain DQN's from 1.43-1.52x to 1.37-1.42x. Under
    ``torch.no_grad()`` (or with nothing requiring a gradient) no gradients are computed.
    """
    if not _head_compiles(head, weights_B, target_probs_BZ):
        return c51_taken_loss(head.logits(actions_B), target_probs_BZ, support_Z, weights_B)
    return _compiled_c51_head_loss(
        head, actions_B, support_Z, weights_B, lambda _out, _support: cpu_array(target_probs_BZ)
    )


def c51_target_and_head_loss(
    head: TakenHead,
    actions_B: torch.Tensor,
    next_logits_BAZ: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None = None,
    *,
    v_min: float,
    v_max: float,
) -> DQNLoss:
    """:func:`c51_head_loss` to the target :func:`projected_target_from_logits` makes of the
    target network's logits of every action in s' (``next_logits_BAZ`` [B, A, Z], a* chosen
    from them), with the same numbers. On the CPU in float32 the target's kernel
    (``cpu_kernels.softmax_greedy_project``) writes into the head's scratch buffers and the
    head's kernel reads it there, without a tensor or conversions in between; elsewhere the
    two functions run in turn."""
    step = (next_logits_BAZ, rewards_B, discounts_B, terminated_B)
    if next_logits_BAZ.dim() != 3 or not _head_compiles(head, weights_B, *step):
        target_BZ = projected_target_from_logits(*step, support_Z, v_min=v_min, v_max=v_max)
        return c51_head_loss(head, actions_B, target_BZ, support_Z, weights_B)

    def target_into(out_BZ: np.ndarray, support: np.ndarray) -> np.ndarray:
        Z = out_BZ.shape[1]
        cpu_kernels.softmax_greedy_project(
            cpu_array(next_logits_BAZ), cpu_array(rewards_B), cpu_array(discounts_B),
            cpu_array(terminated_B), support, v_min, (v_max - v_min) / (Z - 1),
            out_BZ,
        )  # fmt: skip
        return out_BZ

    return _compiled_c51_head_loss(head, actions_B, support_Z, weights_B, target_into)


def _head_compiles(
    head: TakenHead, weights_B: torch.Tensor | None, *others: torch.Tensor | None
) -> bool:
    """Whether the compiled C51 head can run: every tensor CPU float32, outside autocast."""
    return _on_cpu_float32(
        head.h_BH, head.weight, head.bias, head.value_BZ, weights_B, *others
    ) and not torch.is_autocast_enabled("cpu")


def _compiled_c51_head_loss(
    head: TakenHead,
    actions_B: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None,
    target_into: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> DQNLoss:
    """The compiled path of :func:`c51_head_loss`; ``target_into(buffer, support)`` returns the
    target distribution [B, Z] as an array (made in ``buffer``, a free [B, Z] scratch array, or
    not; ``support`` is the atoms as an array)."""
    A, H = head.n_actions, head.h_BH.shape[1]
    h, a, support = cpu_array(head.h_BH), cpu_array(actions_B), cpu_array(support_Z)
    w, b = cpu_array(head.weight).reshape(A, -1, H), cpu_array(head.bias).reshape(A, -1)
    value = _NO_VALUE if head.value_BZ is None else cpu_array(head.value_BZ)
    weights = _NO_WEIGHTS if weights_B is None else cpu_array(weights_B)
    B, Z = h.shape[0], w.shape[1]
    per_sample_B, q_B = torch.empty(B), torch.empty(B)
    # logits, probabilities, and room for the target distribution.
    scratch = np.empty((3, B, Z), dtype=np.float32)
    target = target_into(scratch[2], support)
    tensors = (head.h_BH, head.weight, head.bias, head.value_BZ)
    # Those of ``tensors`` that want a gradient, with their positions (none under no_grad).
    wanted = [(k, t) for k, t in enumerate(tensors) if t is not None and t.requires_grad]
    if not (torch.is_grad_enabled() and wanted):
        loss = cpu_kernels.c51_head_forward(
            h, w, b, a, value, target, support, weights, scratch[0], scratch[1],
            per_sample_B.numpy(), q_B.numpy(),
        )  # fmt: skip
        return DQNLoss(torch.scalar_tensor(loss, dtype=torch.float32), q_B, per_sample_B)
    # The gradients of h, the weight and bias (laid out as the layer holds them) and the logits.
    grads = (torch.empty(h.shape), torch.empty(A * Z, H), torch.empty(A * Z), torch.empty(B, Z))
    grad_h, grad_w, grad_b, grad_logits = (g.numpy() for g in grads)
    loss = cpu_kernels.c51_head_loss_and_grads(
        h, w, b, a, value, target, support, weights, scratch[0], scratch[1],
        per_sample_B.numpy(), q_B.numpy(), grad_logits, grad_h, grad_w.reshape(A, Z, H),
        grad_b.reshape(A, Z),
    )  # fmt: skip
    # The logits' gradient is the dueling stream's (value_BZ is added to them).
    computed = ComputedGrads(tuple(t for _, t in wanted), tuple(grads[k] for k, _ in wanted))
    return DQNLoss(torch.scalar_tensor(loss, dtype=torch.float32), q_B, per_sample_B, computed)


_NO_WEIGHTS = np.empty(0, dtype=np.float32)
_NO_VALUE = np.empty((0, 0), dtype=np.float32)


class _C51CrossEntropy(torch.autograd.Function):
    """The C51 cross-entropy (loss, per-sample terms, expected Q) on the CPU in compiled loops.

    Forward: the softmax, the cross-entropy to the target and the expected Q of each row in one
    pass (``cpu_kernels.c51_cross_entropy``); backward: ``w_b / B * (softmax - target)`` (times
    the target's mass, 1 after projection). The tensor version is a dozen small operations each
    way; this is about 50 us faster per learner step at B = 128, Z = 51 (measured: 87 against
    137 us for forward and backward). Differentiable in the logits only.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits_BZ: torch.Tensor,
        target_BZ: torch.Tensor,
        support_Z: torch.Tensor,
        weights_B: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, target, support = (cpu_array(x) for x in (logits_BZ, target_BZ, support_Z))
        weights = _NO_WEIGHTS if weights_B is None else cpu_array(weights_B)
        B, Z = logits.shape
        probs = np.empty((B, Z), dtype=np.float32)
        per_sample_B, q_B = torch.empty(B), torch.empty(B)
        loss = cpu_kernels.c51_cross_entropy(
            logits, target, support, weights, probs, per_sample_B.numpy(), q_B.numpy()
        )
        ctx.arrays = (probs, target, weights)
        ctx.mark_non_differentiable(per_sample_B, q_B)
        return torch.tensor(loss, dtype=torch.float32), per_sample_B, q_B

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        probs, target, weights = ctx.arrays
        grad_BZ = torch.empty(probs.shape, dtype=torch.float32)
        cpu_kernels.c51_cross_entropy_backward(
            float(grad_loss), probs, target, weights, grad_BZ.numpy()
        )
        return grad_BZ, None, None, None


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
