"""Q-networks. Built deterministically from a seed without touching the global torch RNG.

One class covers the DQN family: an MLP torso (optional layer/batch norm and dropout after each
hidden layer), then either one linear output (plain DQN: the module layout of format-1
checkpoints, ``layers.<k>.weight``) or separate heads (dueling value/advantage, noisy layers).
Distributional heads output ``n_atoms`` values per action: C51 logits or QR-DQN quantiles.
"""

from __future__ import annotations

import torch
from torch import nn

from nexlify.agent.config import AgentConfig
from nexlify.agent.noisy import NoisyLinear

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


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
                layers.append(nn.Dropout(dropout))
            width = hidden

        def head(out: int) -> nn.Module:
            return NoisyLinear(width, out, noisy_sigma0) if noisy else nn.Linear(width, out)

        separate_heads = dueling or noisy
        if not separate_heads:
            layers.append(nn.Linear(width, n_actions * Z))
        # Registered before the heads, so parameters() lists the torso first.
        self.layers = nn.Sequential(*layers)
        self.advantage_head: nn.Module | None = head(n_actions * Z) if separate_heads else None
        self.value_head: nn.Module | None = head(Z) if dueling else None
        self.noisy_layers = [m for m in self.modules() if isinstance(m, NoisyLinear)]
        support = torch.linspace(v_min, v_max, Z) if distributional == "c51" else torch.zeros(Z)
        self.support_Z: torch.Tensor
        self.register_buffer("support_Z", support, persistent=False)

    def forward_raw(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """Head output: q_BA, C51 logits_BAZ (dueling-aggregated per atom) or quantiles_BAZ."""
        h_BH = self.layers(obs_BD)
        B, A, Z = obs_BD.shape[0], self.n_actions, self.n_atoms
        if self.advantage_head is None:
            out = h_BH
        else:
            adv_BAZ = self.advantage_head(h_BH).view(B, A, Z)
            if self.value_head is not None:
                value_B1Z = self.value_head(h_BH).view(B, 1, Z)
                adv_BAZ = value_B1Z + adv_BAZ - adv_BAZ.mean(dim=1, keepdim=True)
            out = adv_BAZ
        if self.distributional == "none":
            return out.reshape(B, A)
        return out.reshape(B, A, Z)

    def q_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Expected Q-values [B, A] of a raw head output."""
        if self.distributional == "c51":
            return (raw.softmax(dim=2) * self.support_Z).sum(dim=2)
        if self.distributional == "qr":
            return raw.mean(dim=2)
        return raw

    def forward(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """Expected Q-values q_BA for a batch of observations obs_BD."""
        return self.q_from_raw(self.forward_raw(obs_BD))

    def set_noise(self, on: bool) -> None:
        """Noisy weights on (learning, exploring) or off (mean weights, greedy evaluation)."""
        for layer in self.noisy_layers:
            layer.noise_on = on

    def reset_noise(self, generator: torch.Generator) -> None:
        """Fresh noise in every noisy layer (no-op without noisy layers)."""
        for layer in self.noisy_layers:
            layer.reset_noise(generator)


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
