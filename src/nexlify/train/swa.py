"""Stochastic weight averaging (Izmailov et al. 2018) of the online network's late weights.

Uses ``torch.optim.swa_utils.AveragedModel`` (an equal-weight running mean). The trainer feeds it
the online weights after every gradient step once ``swa_start`` of the run has passed, then
validates the average like any checkpoint. With batch norm the running statistics are
recomputed on replayed observations (``update_bn``), since averaged weights need their own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn


class WeightAverager:
    """Equal-weight average of a network's parameters over the steps it is given."""

    def __init__(self, net: nn.Module) -> None:
        self.averaged = AveragedModel(net, use_buffers=False)
        self.n_averaged = 0

    def update(self, net: nn.Module) -> None:
        """Add the current parameters of ``net`` to the average."""
        self.averaged.update_parameters(net)
        self.n_averaged += 1

    def restart_if_nonfinite(self, net: nn.Module) -> bool:
        """Start the average afresh from ``net`` when it holds a non-finite weight (after a
        diverged learner was rolled back); True when it did."""
        if all(bool(torch.isfinite(p).all()) for p in self.averaged.module.parameters()):
            return False
        self.averaged = AveragedModel(net, use_buffers=False)
        self.n_averaged = 0
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights in the layout of the original network's ``state_dict``."""
        module = self.averaged.module
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def recompute_batch_norm(self, obs_ND: np.ndarray, device: torch.device) -> None:
        """Batch-norm running statistics of the averaged weights from observations."""
        loader = [torch.from_numpy(np.ascontiguousarray(obs_ND)).to(device)]
        update_bn(loader, self.averaged, device=device)
