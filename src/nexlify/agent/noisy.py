"""Factorised-Gaussian noisy linear layer (Fortunato et al. 2018, as used by Rainbow).

The noise comes from a ``torch.Generator`` owned by the network (never the global RNG), so the
same seed gives the same noise. ``noise_on`` switches between noisy weights (learning and
exploring) and the mean weights (greedy evaluation), independently of train/eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _scaled_noise(size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """f(x) = sign(x) sqrt(|x|) of standard normal draws."""
    x = torch.randn(size, generator=generator, device=device)
    return x.sign() * x.abs().sqrt()


def reset_noise_of(layers: Sequence[NoisyLinear], generator: torch.Generator) -> None:
    """Fresh factorised noise for every layer of ``layers`` (in order: each layer's input
    noise, then its output noise) from one draw of ``generator``, scaled once.

    Each layer's noise has the same distribution as from a draw of its own, but not the same
    numbers: one draw for the whole list consumes the generator differently. One draw rather
    than one per layer: at the learner's sizes, a draw per layer for the four noisy heads of the
    online and target networks is some 40 small operations a step, which cost more than the noise.
    """
    if not layers:
        return
    sizes = [n for layer in layers for n in (layer.in_features, layer.out_features)]
    parts = _scaled_noise(sum(sizes), generator, layers[0].weight_mu.device).split(sizes)
    # Copied into the layers' own buffers: setting a module attribute costs more than the copy.
    for k, layer in enumerate(layers):
        layer.eps_in.copy_(parts[2 * k])
        layer.eps_out.copy_(parts[2 * k + 1])


class NoisyLinear(nn.Module):
    """y = (mu_W + sigma_W * eps_W) x + mu_b + sigma_b * eps_b, eps_W = f(eps_out) f(eps_in)^T."""

    eps_in: torch.Tensor
    eps_out: torch.Tensor

    def __init__(self, in_features: int, out_features: int, sigma0: float) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(
            torch.empty(out_features, in_features).uniform_(-bound, bound)
        )
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("eps_out", torch.zeros(out_features), persistent=False)
        self.noise_on = True
        """Use the noisy weights (True) or only the means (False, for greedy evaluation)."""

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight [out, in] and bias [out] the layer applies now (noisy or the means)."""
        if not self.noise_on:
            return self.weight_mu, self.bias_mu
        eps_out = self.eps_out
        weight = torch.addcmul(self.weight_mu, self.weight_sigma, torch.outer(eps_out, self.eps_in))
        return weight, torch.addcmul(self.bias_mu, self.bias_sigma, eps_out)

    def forward(self, x_BI: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight_and_bias()
        return F.linear(x_BI, weight, bias)
