"""The learner's CPU fast path and the one switch that chooses it (``agent.cpu_kernels``).

:func:`learner_kernels` is called once per agent. ``off`` (or any device but the CPU) gives
:class:`ReferenceKernels`: the networks and losses exactly as :mod:`nexlify.agent.networks` and
:mod:`nexlify.agent.losses` write them. ``auto`` on the CPU gives :class:`CompiledKernels`,
which runs the distributional heads' hot spots as compiled loops (:mod:`nexlify.agent.cpu_kernels`)
on float32 tensors outside autocast and hands anything else to the reference:

- the taken actions' output of a distributional head (:func:`compiled_head.taken_action_linear`:
  each sample times its own action's Z x H block, 1/A of the dense layer's work, both ways);
- the C51 target (softmax, a*, projection) and the greedy action of a C51 head in one pass;
- the online C51 head and its cross-entropy, forward and backward in one call
  (:mod:`nexlify.agent.compiled_head`).

At the learner's sizes (B = 128, A = 7, Z = 51) the tensor versions are a dozen or more small
operations each, whose per-call cost exceeds their arithmetic. Results equal the reference's to
float rounding (tests/test_agent_kernels.py, tests/test_cpu_kernels_switch.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from nexlify.agent import cpu_kernels
from nexlify.agent.compiled_head import TakenHead, c51_head_loss, cpu_array, on_cpu_float32
from nexlify.agent.losses import (
    DQNLoss,
    c51_taken_loss,
    greedy_projected_target,
    project_distribution,
    projected_target_from_logits,
)
from nexlify.agent.networks import QNetwork
from nexlify.agent.noisy import NoisyLinear
from nexlify.errors import ConfigError

C51Loss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], DQNLoss]
"""The online side of a C51 loss, its forward already run: (target_probs_BZ, support_Z,
weights_B) -> the loss."""


class ReferenceKernels:
    """Plain torch (``agent.cpu_kernels: off``, and every device but the CPU)."""

    def greedy(self, net: QNetwork, obs_BD: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a), int64 [B] (first on ties)."""
        return net.greedy(obs_BD)

    def taken_output(
        self, net: QNetwork, obs_BD: torch.Tensor, actions_B: torch.Tensor
    ) -> torch.Tensor:
        """The head's output of the taken actions: q_B, logits_BZ or quantiles_BZ."""
        return net.forward_taken_raw(obs_BD, actions_B)

    def c51_target(
        self,
        next_logits: torch.Tensor,
        rewards_B: torch.Tensor,
        discounts_B: torch.Tensor,
        terminated_B: torch.Tensor,
        support_Z: torch.Tensor,
        *,
        v_min: float,
        v_max: float,
    ) -> torch.Tensor:
        """The projected C51 target [B, Z] (:func:`losses.projected_target_from_logits`)."""
        step = (rewards_B, discounts_B, terminated_B, support_Z)
        return projected_target_from_logits(next_logits, *step, v_min=v_min, v_max=v_max)

    def c51_online(self, net: QNetwork, obs_BD: torch.Tensor, actions_B: torch.Tensor) -> C51Loss:
        """Runs the online network's forward now (before the target's: dropout masks and
        batch-norm statistics are drawn in that order) and returns the loss of its taken
        actions' logits as a function of the target distribution."""
        logits_BZ = net.forward_taken_raw(obs_BD, actions_B).float()
        return partial(c51_taken_loss, logits_BZ)


class CompiledKernels(ReferenceKernels):
    """Compiled loops where the tensors are CPU float32 outside autocast; else the reference."""

    def greedy(self, net: QNetwork, obs_BD: torch.Tensor) -> torch.Tensor:
        """For C51: the softmax, expected values and argmax as one compiled loop over the logits
        (``cpu_kernels.c51_greedy``; the expected values as the C51 target computes them)."""
        if net.distributional != "c51" or obs_BD.device.type != "cpu":
            return super().greedy(net, obs_BD)
        logits_BAZ = net.forward_raw(obs_BD)
        if logits_BAZ.dtype != torch.float32:
            return net.q_from_raw(logits_BAZ).argmax(dim=1)
        actions_B = torch.empty(obs_BD.shape[0], dtype=torch.int64)
        cpu_kernels.c51_greedy(cpu_array(logits_BAZ), cpu_array(net.support_Z), actions_B.numpy())
        return actions_B

    def taken_output(
        self, net: QNetwork, obs_BD: torch.Tensor, actions_B: torch.Tensor
    ) -> torch.Tensor:
        """Only the taken actions' output rows are computed (:func:`taken_head`)."""
        head = taken_head(net, obs_BD)
        if head is None:
            return super().taken_output(net, obs_BD, actions_B)
        return head.logits(actions_B)

    def c51_target(
        self,
        next_logits: torch.Tensor,
        rewards_B: torch.Tensor,
        discounts_B: torch.Tensor,
        terminated_B: torch.Tensor,
        support_Z: torch.Tensor,
        *,
        v_min: float,
        v_max: float,
    ) -> torch.Tensor:
        """[B, A, Z] logits: ``cpu_kernels.softmax_greedy_project``, which never stores the
        B * A * Z probabilities; [B, Z] (a* chosen): torch's softmax, then the compiled
        projection."""
        step = (rewards_B, discounts_B, terminated_B, support_Z)
        if next_logits.dim() == 3:
            kernel = cpu_kernels.softmax_greedy_project
            compiled = _compiled_target(kernel, next_logits, *step, v_min, v_max)
            if compiled is not None:
                return compiled
            return super().c51_target(next_logits, *step, v_min=v_min, v_max=v_max)
        next_probs_BZ = next_logits.softmax(dim=1)
        return compiled_projection(next_probs_BZ, *step, v_min=v_min, v_max=v_max)

    def c51_online(self, net: QNetwork, obs_BD: torch.Tensor, actions_B: torch.Tensor) -> C51Loss:
        """The taken-action layer and the cross-entropy as one compiled call, gradients
        included (:func:`compiled_head.c51_head_loss`)."""
        head = taken_head(net, obs_BD)
        if head is None:
            return super().c51_online(net, obs_BD, actions_B)
        return partial(c51_head_loss, head, actions_B)


def learner_kernels(cpu_kernels_mode: str, device: torch.device) -> ReferenceKernels:
    """The learner's kernels for ``agent.cpu_kernels`` on ``device``: compiled for ``auto`` on
    the CPU, the plain-torch reference otherwise."""
    if cpu_kernels_mode == "auto" and device.type == "cpu":
        return CompiledKernels()
    if cpu_kernels_mode in ("auto", "off"):
        return ReferenceKernels()
    raise ConfigError(f"agent.cpu_kernels is {cpu_kernels_mode!r}; expected auto or off")


def taken_head(net: QNetwork, obs_BD: torch.Tensor) -> TakenHead | None:
    """What the taken-action output of a distributional head is made from, on the CPU in
    float32 outside autocast (else None): ``net.forward_taken_raw(obs, a)`` equals
    ``head.logits(a)``, ``taken_action_linear(h_BH, weight_AZH, bias_AZ, a)`` plus ``value_BZ``
    when dueling.

    Dueling subtracts the mean advantage through the mean of the advantage weights, which is
    the same linear map, so V - mean_a A is one linear layer (``value_BZ``).
    """
    Z = net.n_atoms
    if (
        Z == 1
        or obs_BD.device.type != "cpu"
        or obs_BD.dtype != torch.float32
        or torch.is_autocast_enabled("cpu")
    ):
        return None
    h_BH = net.torso(obs_BD)
    A = net.n_actions
    weight, bias = _weight_and_bias(net.output_layer)
    value_BZ = None
    if net.value_head is not None:
        value_w, value_b = _weight_and_bias(net.value_head)
        # V + A(a) - mean_a A: one linear map for V - mean_a A.
        mean_w, mean_b = weight.view(A, Z, -1).mean(dim=0), bias.view(A, Z).mean(dim=0)
        value_BZ = F.linear(h_BH, value_w - mean_w, value_b - mean_b)
    return TakenHead(h_BH, weight, bias, value_BZ, A)


def _weight_and_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(layer, NoisyLinear):
        return layer.weight_and_bias()
    assert isinstance(layer, nn.Linear) and layer.bias is not None
    return layer.weight, layer.bias


# ------------------------------------------------------------------- compiled projections


def compiled_projection(
    next_probs_BZ: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    *,
    v_min: float,
    v_max: float,
) -> torch.Tensor:
    """:func:`losses.project_distribution` as one compiled pass (``cpu_kernels.project``) for
    CPU float32 tensors; the reference otherwise."""
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    compiled = _compiled_target(cpu_kernels.project, next_probs_BZ, *step, v_min, v_max)
    if compiled is not None:
        return compiled
    return project_distribution(next_probs_BZ, *step, v_min=v_min, v_max=v_max)


def compiled_greedy_projection(
    next_probs_BAZ: torch.Tensor,
    rewards_B: torch.Tensor,
    discounts_B: torch.Tensor,
    terminated_B: torch.Tensor,
    support_Z: torch.Tensor,
    *,
    v_min: float,
    v_max: float,
) -> torch.Tensor:
    """:func:`losses.greedy_projected_target` (a* from the probabilities, then projected) as
    one compiled pass (``cpu_kernels.greedy_project``) for CPU float32 tensors."""
    step = (rewards_B, discounts_B, terminated_B, support_Z)
    kernel = cpu_kernels.greedy_project
    compiled = _compiled_target(kernel, next_probs_BAZ, *step, v_min, v_max)
    if compiled is not None:
        return compiled
    return greedy_projected_target(next_probs_BAZ, *step, v_min=v_min, v_max=v_max)


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
    tensors = (x, rewards_B, discounts_B, terminated_B, support_Z)
    if not on_cpu_float32(*tensors):
        return None
    Z = x.shape[-1]
    target_BZ = torch.empty(x.shape[0], Z, dtype=torch.float32)
    arrays = [cpu_array(t) for t in tensors]
    kernel(*arrays, v_min, (v_max - v_min) / (Z - 1), target_BZ.numpy())
    return target_BZ
