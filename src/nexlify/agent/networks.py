"""Q-networks. Built deterministically from a seed without touching the global torch RNG.

One class covers the DQN family: an MLP torso (optional layer/batch norm and dropout after each
hidden layer), then either one linear output (plain DQN: the module layout of format-1
checkpoints, ``layers.<k>.weight``) or separate heads (dueling value/advantage, noisy layers).
Distributional heads output ``n_atoms`` values per action: C51 logits or QR-DQN quantiles.

This module is the plain-torch reference: :meth:`QNetwork.forward_taken_raw` gathers the taken
actions from the full output, :meth:`QNetwork.greedy` is the argmax of :meth:`QNetwork.forward`.
The compiled CPU versions of both live in :mod:`nexlify.agent.fast_path`.
"""

from __future__ import annotations

import torch
from torch import nn

from nexlify.agent.config import AgentConfig
from nexlify.agent.noisy import NoisyLinear

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


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
        """Head output of one action per row: q_B, or logits_BZ / quantiles_BZ
        (``forward_raw(obs_BD)`` gathered at ``actions_B``)."""
        raw = self.forward_raw(obs_BD)
        if self.n_atoms == 1:
            return raw.gather(1, actions_B.unsqueeze(1)).squeeze(1)
        B, Z = obs_BD.shape[0], self.n_atoms
        return raw.gather(1, actions_B.view(B, 1, 1).expand(B, 1, Z)).squeeze(1)

    def torso(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """The hidden layers' output h_BH, which the output layers read."""
        return _run_layers(obs_BD, self._torso)

    @property
    def output_layer(self) -> nn.Module:
        """The layer with the A * Z action outputs (A blocks of Z rows): the advantage head
        with separate heads, else the last layer."""
        return self.advantage_head if self.advantage_head is not None else self.layers[-1]

    def q_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Expected Q-values [B, A] of a raw head output."""
        if self.distributional == "c51":
            return raw.softmax(dim=2) @ self.support_Z
        if self.distributional == "qr":
            return raw.mean(dim=2)
        return raw

    def greedy(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """argmax_a of :meth:`forward` (first on ties), int64 [B]."""
        return self.forward(obs_BD).argmax(dim=1)

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
    """Apply ``modules`` in order (a plain loop: ``nn.Sequential``'s call costs more per layer)."""
    for layer in modules:
        x = layer(x)
    return x


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
