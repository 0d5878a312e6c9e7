"""Q-networks. Built deterministically from a seed without touching the global torch RNG."""

from __future__ import annotations

import torch
from torch import nn

from nexlify.agent.config import AgentConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class QNetwork(nn.Module):
    """MLP from an observation [B, D] to one Q-value per action [B, A]."""

    def __init__(
        self, obs_dim: int, n_actions: int, hidden_sizes: tuple[int, ...], activation: str
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
        layers: list[nn.Module] = []
        width = obs_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, n_actions))
        self.layers = nn.Sequential(*layers)

    def forward(self, obs_BD: torch.Tensor) -> torch.Tensor:
        """Q-values q_BA for a batch of observations obs_BD."""
        q_BA: torch.Tensor = self.layers(obs_BD)
        return q_BA


def build_q_network(obs_dim: int, n_actions: int, config: AgentConfig, seed: int) -> QNetwork:
    """A Q-network on the CPU whose initial weights depend only on ``seed``.

    The weights are drawn from torch's default CPU generator reseeded inside ``fork_rng``, so the
    caller's global RNG state (CPU and CUDA) is exactly as it was before the call.
    """
    with torch.random.fork_rng(devices=[]):
        # Seed only the CPU generator: torch.manual_seed would also reseed every CUDA device,
        # which fork_rng(devices=[]) does not restore.
        torch.random.default_generator.manual_seed(seed)
        return QNetwork(obs_dim, n_actions, config.hidden_sizes, config.activation)
