"""Q-networks. Built deterministically from a seed without touching the global torch RNG.

One class covers the DQN family: an MLP torso (optional layer/batch norm and dropout after each
hidden layer), then either one linear output (plain DQN: the module layout of format-1
checkpoints, ``layers.<k>.weight``) or separate heads (dueling value/advantage, noisy layers).
Distributional heads output ``n_atoms`` values per action: C51 logits or QR-DQN quantiles.

The learner needs the online network's output for the taken action only.
:meth:`QNetwork.forward_taken_raw` gives it without computing the other actions' atoms: on the
CPU a distributional output layer is A blocks of Z rows, and multiplying each sample by its own
action's block (:func:`taken_action_linear`) does 1/A of the dense layer's work forward and
backward. At A=7, Z=51 that layer is most of a C51 gradient step's arithmetic.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nexlify.agent import cpu_kernels
from nexlify.agent.config import AgentConfig
from nexlify.agent.noisy import NoisyLinear

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class TakenHead(NamedTuple):
    """The parts of a distributional head's output for the taken actions (see
    :meth:`QNetwork.taken_head`): torso output, the output layer's weight [A * Z, H] and bias
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


class SeededDropout(nn.Module):
    """Dropout whose masks come from a ``torch.Generator`` set on it (:attr:`generator`), not
    from torch's global generator, which nothing seeds: with ``nn.Dropout`` two runs of the same
    seed trained differently. In eval mode, or at p = 0, the input passes through unchanged;
    in train mode each unit is kept with probability 1 - p and scaled by 1 / (1 - p), as
    ``nn.Dropout`` does. The agent sets its own generator (saved in its checkpoints)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p={p} must be in [0, 1)")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            raise RuntimeError(
                "dropout in train mode draws its masks from a generator: call "
                "QNetwork.set_dropout_generator first (DQNAgent does), or use eval mode"
            )
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class QNetwork(nn.Module):
    """Observation [B, D] -> raw head output: [B, A] (scalar Q) or [B, A, Z] (distributional)."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        *,
        dueling: bool = False,
        noisy: bool = False,
        noisy_sigma0: float = 0.5,
        distributional: str = "none",
        n_atoms: int = 1,
        v_min: float = -10.0,
        v_max: float = 10.0,
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or n_actions < 1:
            raise ValueError(f"obs_dim={obs_dim} and n_actions={n_actions} must both be >= 1")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {list(_ACTIVATIONS)}"
            )
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.distributional = distributional
        self.n_atoms = n_atoms if distributional != "none" else 1
        self.dueling = dueling
        Z = self.n_atoms
        layers: list[nn.Module] = []
        width = obs_dim
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden))
            if norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            elif norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(SeededDropout(dropout))
            width = hidden

        def head(out: int) -> nn.Module:
            return NoisyLinear(width, out, noisy_sigma0) if noisy else nn.Linear(width, out)

        separate_heads = dueling or noisy
        n_torso = len(layers)
        if not separate_heads:
            layers.append(nn.Linear(width, n_actions * Z))
        # Registered before the heads, so parameters() lists the torso first.
        self.layers = nn.Sequential(*layers)
        self._all_layers: tuple[nn.Module, ...] = tuple(layers)
        self._torso: tuple[nn.Module, ...] = tuple(layers[:n_torso])
        self.advantage_head: nn.Module | None = head(n_actions * Z) if separate_heads else None
        self.value_head: nn.Module | None = head(Z) if dueling else None
        self.noisy_layers = [m for m in self.modules() if isinstance(m, NoisyLinear)]
        support = torch.linspace(v_min, v_max, Z) if distributional == "c51" else torch.zeros(Z)
        self.support_Z: torch.Tensor
        self.register_buffer("support_Z", support, persistent=False)

    def forward_raw(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """Head output: q_BA, C51 logits_BAZ (dueling-aggregated per atom) or quantiles_BAZ."""
        h_BH = _run_layers(obs_BD, self._all_layers)
        B, A, Z = obs_BD.shape[0], self.n_actions, self.n_atoms
        if self.advantage_head is None:
            out = h_BH
        else:
            adv_BAZ = _run_layers(h_BH, (self.advantage_head,)).view(B, A, Z)
            if self.value_head is not None:
                value_B1Z = self.value_head(h_BH).view(B, 1, Z)
                adv_BAZ = value_B1Z + adv_BAZ - adv_BAZ.mean(dim=1, keepdim=True)
            out = adv_BAZ
        if self.distributional == "none":
            return out.reshape(B, A)
        return out.reshape(B, A, Z)

    def forward_taken_raw(self, obs_BD: torch.Tensor, actions_B: torch.Tensor) -> torch.Tensor:
        """Head output of one action per row: q_B, or logits_BZ / quantiles_BZ.

        ``forward_raw(obs_BD)`` gathered at ``actions_B``; for distributional heads on the CPU
        only the taken actions' output rows are computed (see :func:`taken_action_linear` and
        :meth:`taken_head`).
        """
        head = self.taken_head(obs_BD)
        if head is not None:
            return head.logits(actions_B)
        raw = self.forward_raw(obs_BD)
        if self.n_atoms == 1:
            return raw.gather(1, actions_B.unsqueeze(1)).squeeze(1)
        B, Z = obs_BD.shape[0], self.n_atoms
        return raw.gather(1, actions_B.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)

    def taken_head(self, obs_BD: torch.Tensor) -> TakenHead | None:
        """What the taken-action output is made from, for distributional heads on the CPU in
        float32 outside autocast (else None): ``forward_taken_raw(obs, a)`` equals
        ``taken_action_linear(h_BH, weight_AZH, bias_AZ, a)`` plus ``value_BZ`` when dueling.

        Dueling subtracts the mean advantage through the mean of the advantage weights, which
        is the same linear map, so V - mean_a A is one linear layer (``value_BZ``).
        """
        Z = self.n_atoms
        if (
            Z == 1
            or obs_BD.device.type != "cpu"
            or obs_BD.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
        ):
            return None
        h_BH = _run_layers(obs_BD, self._torso)
        A = self.n_actions
        head = self.advantage_head if self.advantage_head is not None else self.layers[-1]
        weight, bias = _weight_and_bias(head)
        value_BZ = None
        if self.value_head is not None:
            value_w, value_b = _weight_and_bias(self.value_head)
            # V + A(a) - mean_a A: one linear map for V - mean_a A.
            mean_w, mean_b = weight.view(A, Z, -1).mean(dim=0), bias.view(A, Z).mean(dim=0)
            value_BZ = F.linear(h_BH, value_w - mean_w, value_b - mean_b)
        return TakenHead(h_BH, weight, bias, value_BZ, A)

    def q_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Expected Q-values [B, A] of a raw head output."""
        if self.distributional == "c51":
            return raw.softmax(dim=2) @ self.support_Z
        if self.distributional == "qr":
            return raw.mean(dim=2)
        return raw

    def greedy(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """argmax_a of :meth:`forward` (first on ties), int64 [B]. For C51 on the CPU in float32
        the softmax, expected values and argmax run as one compiled loop over the logits
        (``cpu_kernels.c51_greedy``, the expected values as the C51 target computes them,
        equal to :meth:`forward`'s to float rounding)."""
        if self.distributional != "c51" or obs_BD.device.type != "cpu":
            return self.forward(obs_BD).argmax(dim=1)
        logits_BAZ = self.forward_raw(obs_BD)
        if logits_BAZ.dtype != torch.float32:
            return self.q_from_raw(logits_BAZ).argmax(dim=1)
        actions_B = torch.empty(obs_BD.shape[0], dtype=torch.int64)
        support_Z = cpu_array(self.support_Z)
        cpu_kernels.c51_greedy(cpu_array(logits_BAZ), support_Z, actions_B.numpy())
        return actions_B

    def forward(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """Expected Q-values q_BA for a batch of observations obs_BD."""
        return self.q_from_raw(self.forward_raw(obs_BD))

    def set_dropout_generator(self, generator: torch.Generator) -> None:
        """Draw every dropout mask of this network from ``generator`` (see SeededDropout)."""
        for module in self.modules():
            if isinstance(module, SeededDropout):
                module.generator = generator

    def set_noise(self, on: bool) -> None:
        """Noisy weights on (learning, exploring) or off (mean weights, greedy evaluation)."""
        for layer in self.noisy_layers:
            layer.noise_on = on


def _run_layers(x: torch.Tensor, modules: tuple[nn.Module, ...]) -> torch.Tensor:
    """Apply ``modules`` in order (a plain loop: ``nn.Sequential``'s call costs more per layer).

    No-grad layers once went to oneDNN's linear with the ReLU fused when they were large (the C51
    head). Inside a learner step on the 2-core EPYC the benchmarks run on, that was 6% slower for
    the whole C51 step than MKL's sgemm through ``F.linear`` (2389 against 2238 us, 128-128
    network), and no faster at 256-256 (4310 against 4245 us), although the layer alone timed
    faster on some days: it was removed."""
    for layer in modules:
        x = layer(x)
    return x


def _weight_and_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(layer, NoisyLinear):
        return layer.weight_and_bias()
    assert isinstance(layer, nn.Linear) and layer.bias is not None
    return layer.weight, layer.bias


def cpu_array(x: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor for the compiled kernels (detached; copied only when it is
    not contiguous). Detaches and copies only where needed: this runs a dozen times per C51
    learner step, and each step skipped saves a fraction of a microsecond."""
    if x.requires_grad:
        x = x.detach()
    return (x if x.is_contiguous() else x.contiguous()).numpy()


class _TakenActionLinear(torch.autograd.Function):
    """out_BZ = h_BH @ weight_AZH[a_B].T + bias_AZ[a_B] on the CPU, forward and backward.

    Each sample is multiplied by its own action's Z x H block only: B * Z * H multiply-adds
    each way instead of the dense layer's A * B * Z * H. Compiled loops (cpu_kernels) rather
    than one matrix product per action: at ~B/A rows each, their per-call cost exceeds their
    arithmetic, and the saving over the dense layer mostly disappears.
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
    # No gradient wanted (the double DQN target's a*): the forward kernel without the
    # autograd.Function around it, whose own cost is larger than the kernel's at this size.
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


def network_from_config(obs_dim: int, n_actions: int, config: AgentConfig) -> QNetwork:
    """A Q-network shaped by ``config`` (weights from torch's current default generator)."""
    return QNetwork(
        obs_dim,
        n_actions,
        config.hidden_sizes,
        config.activation,
        dueling=config.dueling,
        noisy=config.noisy,
        noisy_sigma0=config.noisy_sigma0,
        distributional=config.distributional,
        n_atoms=config.n_outputs_per_action,
        v_min=config.v_min,
        v_max=config.v_max,
        norm=config.norm,
        dropout=config.dropout,
    )


def build_q_network(obs_dim: int, n_actions: int, config: AgentConfig, seed: int) -> QNetwork:
    """A Q-network on the CPU whose initial weights depend only on ``seed``.

    The weights are drawn from torch's default CPU generator reseeded inside ``fork_rng``, so the
    caller's global RNG state (CPU and CUDA) is exactly as it was before the call.
    """
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also reseed every CUDA device,
        # which fork_rng(devices=[]) does not restore.
        torch.random.default_generator.manual_seed(seed)
        return network_from_config(obs_dim, n_actions, config)
