"""The compiled distributional head on the CPU: the taken-action layer and the fused C51 loss.

Part of the learner's fast path (:mod:`nexlify.agent.fast_path` decides when it runs):

- :func:`taken_action_linear`: the output layer for the taken actions only, forward and
  backward as compiled loops (an ``autograd.Function``);
- :func:`c51_head_loss`: that layer and the C51 cross-entropy, forward and backward, in one
  compiled call when the loss is made. The gradients come back as :class:`ComputedGrads`
  instead of through an ``autograd.Function``, whose own cost (applying it, saving tensors,
  calling back into Python from the backward pass) is larger than the arithmetic it wraps at
  this size; :meth:`FusedC51Loss.backward` passes them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from nexlify.agent import cpu_kernels
from nexlify.agent.losses import DQNLoss, c51_taken_loss


def cpu_array(x: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor for the compiled kernels (detached; copied only when it is
    not contiguous)."""
    if x.requires_grad:
        x = x.detach()
    return (x if x.is_contiguous() else x.contiguous()).numpy()


def on_cpu_float32(*tensors: torch.Tensor | None) -> bool:
    """Every tensor given (None: absent, skipped) is a float32 CPU tensor: the kernels' input."""
    return all(x is None or (x.device.type == "cpu" and x.dtype == torch.float32) for x in tensors)


class TakenHead(NamedTuple):
    """The parts of a distributional head's output for the taken actions
    (:func:`fast_path.taken_head`): torso output, the output layer's weight [A * Z, H] and bias
    [A * Z] as the layer holds them (A blocks of Z rows: :attr:`weight_AZH`, :attr:`bias_AZ`),
    and the dueling stream's V - mean_a A (None without dueling)."""

    h_BH: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    value_BZ: torch.Tensor | None
    n_actions: int

    @property
    def weight_AZH(self) -> torch.Tensor:  # noqa: N802 (shape suffix, as the fields)
        """The weight as A blocks of Z rows (a view)."""
        return self.weight.view(self.n_actions, -1, self.weight.shape[1])

    @property
    def bias_AZ(self) -> torch.Tensor:  # noqa: N802 (shape suffix, as the fields)
        """The bias as A blocks of Z (a view)."""
        return self.bias.view(self.n_actions, -1)

    def logits(self, actions_B: torch.Tensor) -> torch.Tensor:
        """The head's output for ``actions_B``, [B, Z]: what ``forward_taken_raw`` returns."""
        out_BZ = taken_action_linear(self.h_BH, self.weight_AZH, self.bias_AZ, actions_B)
        return out_BZ if self.value_BZ is None else out_BZ + self.value_BZ


# ------------------------------------------------------------- the taken-action layer


class _TakenActionLinear(torch.autograd.Function):
    """out_BZ = h_BH @ weight_AZH[a_B].T + bias_AZ[a_B] on the CPU, forward and backward.

    Compiled loops rather than one matrix product per action: at ~B/A rows each, the products'
    per-call cost exceeds their arithmetic.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h_BH: torch.Tensor,
        weight_AZH: torch.Tensor,
        bias_AZ: torch.Tensor,
        actions_B: torch.Tensor,
    ) -> torch.Tensor:
        out_BZ = _taken_linear_output(h_BH, weight_AZH, bias_AZ, actions_B)
        ctx.save_for_backward(h_BH, weight_AZH, actions_B)
        return out_BZ

    @staticmethod
    def backward(ctx: Any, grad_BZ: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h_BH, weight_AZH, actions_B = ctx.saved_tensors
        grad_h_BH = torch.empty(h_BH.shape, dtype=torch.float32)
        grad_w_AZH = torch.zeros(weight_AZH.shape, dtype=torch.float32)
        grad_b_AZ = torch.zeros(weight_AZH.shape[:2], dtype=torch.float32)
        cpu_kernels.taken_linear_backward(
            cpu_array(grad_BZ), cpu_array(h_BH), cpu_array(weight_AZH),
            cpu_array(actions_B), grad_h_BH.numpy(), grad_w_AZH.numpy(), grad_b_AZ.numpy(),
        )  # fmt: skip
        return grad_h_BH, grad_w_AZH, grad_b_AZ, None


def taken_action_linear(
    h_BH: torch.Tensor, weight_AZH: torch.Tensor, bias_AZ: torch.Tensor, actions_B: torch.Tensor
) -> torch.Tensor:
    """``F.linear(h_BH, weight, bias).view(B, A, Z)`` at ``actions_B``: float32 [B, Z].

    CPU float32 tensors only. Differentiable in ``h_BH``, ``weight_AZH`` and ``bias_AZ``; equal
    to the dense layer's output up to float rounding (each entry is the same dot product,
    summed in another order), at 1/A of its cost.
    """
    if torch.is_grad_enabled() and (
        h_BH.requires_grad or weight_AZH.requires_grad or bias_AZ.requires_grad
    ):
        out_BZ: torch.Tensor = _TakenActionLinear.apply(h_BH, weight_AZH, bias_AZ, actions_B)
        return out_BZ
    # No gradient wanted (the double DQN target's a*): the kernel without the autograd.Function
    # around it, whose own cost is larger than the kernel's at this size.
    return _taken_linear_output(h_BH, weight_AZH, bias_AZ, actions_B)


def _taken_linear_output(
    h_BH: torch.Tensor, weight_AZH: torch.Tensor, bias_AZ: torch.Tensor, actions_B: torch.Tensor
) -> torch.Tensor:
    """:func:`taken_action_linear`'s output from the compiled kernel (no graph)."""
    out_BZ = torch.empty(h_BH.shape[0], weight_AZH.shape[1], dtype=torch.float32)
    cpu_kernels.taken_linear_forward(
        cpu_array(h_BH), cpu_array(weight_AZH), cpu_array(bias_AZ), cpu_array(actions_B),
        out_BZ.numpy(),
    )  # fmt: skip
    return out_BZ


# ------------------------------------------------------------------- the fused C51 head


class ComputedGrads:
    """Gradients of a loss with respect to some tensors of its graph, computed with the loss.

    :meth:`backward` hands them to ``torch.autograd.backward``, which carries them through the
    graphs of those tensors (the torso; a noisy or dueling output layer) into the leaves.

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
    weight and bias. False (nothing done) otherwise."""
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


@dataclass(frozen=True)
class FusedC51Loss(DQNLoss):
    """A C51 loss made by :func:`c51_head_loss`: ``loss`` has no graph of its own; its
    gradients were computed with it (None where none were wanted, under ``no_grad``)."""

    computed_grads: ComputedGrads | None = None
    """The gradients of the torso output, the output layer's weight and bias and the dueling
    stream, passed on by :meth:`backward`."""

    def backward(self) -> None:
        """The :attr:`computed_grads` carried through the rest of the graph (torso, noisy or
        dueling layers) into the parameters' ``.grad``, as ``loss.backward()`` would."""
        if self.computed_grads is None:
            self.loss.backward()  # raises as a loss without a graph does
        else:
            self.computed_grads.backward()


def c51_head_loss(
    head: TakenHead,
    actions_B: torch.Tensor,
    target_probs_BZ: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None = None,
) -> DQNLoss:
    """:func:`losses.c51_taken_loss` of ``head.logits(actions_B)``, gradients included (equal
    up to float32 rounding: the kernels sum in another order and use a polynomial exp).

    For CPU float32 tensors outside autocast the output layer, the loss and their gradients
    run as one compiled call (``cpu_kernels.c51_head_loss_and_grads``) and the result is a
    :class:`FusedC51Loss`: call its :meth:`~FusedC51Loss.backward`. Under ``torch.no_grad()``
    (or with nothing requiring a gradient) no gradients are computed. Other tensors take the
    layer, then the reference loss.
    """
    tensors = (head.h_BH, head.weight, head.bias, head.value_BZ, weights_B, target_probs_BZ)
    if not on_cpu_float32(*tensors) or torch.is_autocast_enabled("cpu"):
        return c51_taken_loss(head.logits(actions_B), target_probs_BZ, support_Z, weights_B)
    return _compiled_c51_head_loss(head, actions_B, target_probs_BZ, support_Z, weights_B)


_NO_WEIGHTS = np.empty(0, dtype=np.float32)
_NO_VALUE = np.empty((0, 0), dtype=np.float32)


def _compiled_c51_head_loss(
    head: TakenHead,
    actions_B: torch.Tensor,
    target_probs_BZ: torch.Tensor,
    support_Z: torch.Tensor,
    weights_B: torch.Tensor | None,
) -> FusedC51Loss:
    """The compiled path of :func:`c51_head_loss`."""
    A, H = head.n_actions, head.h_BH.shape[1]
    h, a, support = cpu_array(head.h_BH), cpu_array(actions_B), cpu_array(support_Z)
    w, b = cpu_array(head.weight).reshape(A, -1, H), cpu_array(head.bias).reshape(A, -1)
    value = _NO_VALUE if head.value_BZ is None else cpu_array(head.value_BZ)
    weights = _NO_WEIGHTS if weights_B is None else cpu_array(weights_B)
    target = cpu_array(target_probs_BZ)
    B, Z = h.shape[0], w.shape[1]
    per_sample_B, q_B = torch.empty(B), torch.empty(B)
    logits, probs = np.empty((B, Z), dtype=np.float32), np.empty((B, Z), dtype=np.float32)
    tensors = (head.h_BH, head.weight, head.bias, head.value_BZ)
    # Those of ``tensors`` that want a gradient, with their positions (none under no_grad).
    wanted = [(k, t) for k, t in enumerate(tensors) if t is not None and t.requires_grad]
    if not (torch.is_grad_enabled() and wanted):
        loss = cpu_kernels.c51_head_forward(
            h, w, b, a, value, target, support, weights, logits, probs, per_sample_B.numpy(),
            q_B.numpy(),
        )  # fmt: skip
        return FusedC51Loss(torch.scalar_tensor(loss, dtype=torch.float32), q_B, per_sample_B)
    # The gradients of h, the weight and bias (laid out as the layer holds them) and the logits.
    grads = (torch.empty(h.shape), torch.empty(A * Z, H), torch.empty(A * Z), torch.empty(B, Z))
    grad_h, grad_w, grad_b, grad_logits = (g.numpy() for g in grads)
    loss = cpu_kernels.c51_head_loss_and_grads(
        h, w, b, a, value, target, support, weights, logits, probs, per_sample_B.numpy(),
        q_B.numpy(), grad_logits, grad_h, grad_w.reshape(A, Z, H), grad_b.reshape(A, Z),
    )  # fmt: skip
    # The logits' gradient is the dueling stream's (value_BZ is added to them).
    computed = ComputedGrads(tuple(t for _, t in wanted), tuple(grads[k] for k, _ in wanted))
    loss_t = torch.scalar_tensor(loss, dtype=torch.float32)
    return FusedC51Loss(loss_t, q_B, per_sample_B, computed)
