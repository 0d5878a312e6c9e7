"""Ensembles of trained agents: one policy from several models, saved as one checkpoint.

Aggregation: ``mean`` averages the members' expected Q-values and takes the argmax; ``vote``
takes each member's greedy action and picks the most frequent (ties go to the action with the
higher mean Q, then the lower index). An :class:`EnsembleAgent` has the policy surface of a
:class:`~nexlify.agent.dqn.DQNAgent` (``greedy``, ``q_values``, ``act``, ``obs_dim``,
``n_actions``), so it is usable wherever a single model is evaluated or traded.

File format ``nexlify-ensemble``: ``members`` holds each member's checkpoint dict (as
``DQNAgent.save`` writes it); ``model_state_dict`` is the first (best) member's weights, so the
original tool's ``torch.load(path)["model_state_dict"]`` still gives a working single network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nexlify
from nexlify.agent.dqn import (
    DQNAgent,
    agent_from_checkpoint,
    checkpoint_dict,
    hold_unless_clear,
    read_checkpoint,
)
from nexlify.errors import CheckpointError
from nexlify.io import atomic_write

ENSEMBLE_FORMAT = "nexlify-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
AGGREGATIONS = ("mean", "vote")
"""How members' opinions are combined: average Q-values, or majority vote of greedy actions."""


def aggregate_q(q_MNA: torch.Tensor) -> torch.Tensor:
    """Average of members' Q-values: [M, N, A] -> [N, A]."""
    return q_MNA.mean(dim=0)


def vote(q_MNA: torch.Tensor) -> torch.Tensor:
    """Majority vote of the members' greedy actions, int64 [N].

    Ties are broken by the mean Q-value of the tied actions, then by the lower action index.
    """
    M, N, A = q_MNA.shape
    greedy_MN = q_MNA.argmax(dim=2)
    votes_NA = torch.zeros(N, A, dtype=torch.float32, device=q_MNA.device)
    votes_NA.scatter_add_(1, greedy_MN.T, torch.ones(N, M, device=q_MNA.device))
    # Vote counts are integers, so a tie-break below 1 never overturns a majority.
    mean_q_NA = q_MNA.float().mean(dim=0)
    span = mean_q_NA.max(dim=1, keepdim=True).values - mean_q_NA.min(dim=1, keepdim=True).values
    tie_break_NA = 0.5 * (mean_q_NA - mean_q_NA.min(dim=1, keepdim=True).values) / (span + 1e-12)
    return (votes_NA + tie_break_NA).argmax(dim=1)


class EnsembleAgent:
    """Several trained agents acting as one policy (Q-averaging or voting)."""

    def __init__(self, members: Sequence[DQNAgent], aggregation: str = "mean") -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r}: choose one of {AGGREGATIONS}")
        shapes = {(m.obs_dim, m.n_actions) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"members disagree on (obs_dim, n_actions): {sorted(shapes)}")
        self.members = list(members)
        self.aggregation = aggregation
        self.obs_dim, self.n_actions = shapes.pop()
        self.config = self.members[0].config

    def member_q(self, obs_ND: np.ndarray) -> torch.Tensor:
        """Every member's noise-free Q-values, float32 [M, N, A] on the CPU."""
        return torch.stack([m.q_values_tensor(obs_ND).cpu() for m in self.members])

    def q_values(self, obs_ND: np.ndarray) -> np.ndarray:
        """Mean of the members' Q-values, float32 [N, A]."""
        return aggregate_q(self.member_q(obs_ND)).numpy()

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray:
        """The ensemble's action per observation, int64 [N]: the mean Q's argmax or the vote,
        held back to hold where the mean Q beats hold's by less than ``hold_margin``."""
        q_MNA = self.member_q(obs_ND)
        mean_q_NA = aggregate_q(q_MNA)
        chosen_N = vote(q_MNA) if self.aggregation == "vote" else mean_q_NA.argmax(dim=1)
        if self.config.hold_margin == 0.0:
            return chosen_N.numpy().astype(np.int64)
        return hold_unless_clear(mean_q_NA.float(), chosen_N, self.config.hold_margin)

    def act(self, obs_ND: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy around :meth:`greedy` (same draws as ``DQNAgent.act``)."""
        n = int(obs_ND.shape[0])
        explore_N = rng.random(n) < epsilon
        random_N = rng.integers(0, self.n_actions, size=n, dtype=np.int64)
        return np.where(explore_N, random_N, self.greedy(obs_ND))

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        metrics: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        member_metrics: Sequence[dict[str, Any]] | None = None,
    ) -> Path:
        """One checkpoint holding every member (loads with ``weights_only=True``)."""
        members = [
            checkpoint_dict(m, metrics=(member_metrics[k] if member_metrics else None))
            for k, m in enumerate(self.members)
        ]
        checkpoint = {
            "format": ENSEMBLE_FORMAT,
            "format_version": ENSEMBLE_FORMAT_VERSION,
            "nexlify_version": nexlify.__version__,
            "aggregation": self.aggregation,
            "members": members,
            "model_state_dict": members[0]["model_state_dict"],
            "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
            "extra": dict(extra or {}),
        }
        path = Path(path)
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))
        return path


def load_ensemble(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[EnsembleAgent, dict[str, Any]]:
    """Rebuild an ensemble written by :meth:`EnsembleAgent.save`."""
    path = Path(path)
    ckpt = read_checkpoint(path, device)
    if ckpt.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{path}: format is {ckpt.get('format')!r}, not {ENSEMBLE_FORMAT!r}")
    if ckpt.get("format_version") != ENSEMBLE_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: ensemble format_version {ckpt.get('format_version')!r} is not supported "
            f"(this nexlify reads {ENSEMBLE_FORMAT_VERSION})"
        )
    members_raw = ckpt.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise CheckpointError(f"{path}: an ensemble file needs a non-empty list of members")
    members = [agent_from_checkpoint(f"{path} member {k}", m, device)[0]
               for k, m in enumerate(members_raw)]  # fmt: skip
    try:
        ensemble = EnsembleAgent(members, str(ckpt.get("aggregation", "mean")))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    info = {
        "metrics": dict(ckpt.get("metrics", {})),
        "extra": dict(ckpt.get("extra", {})),
        "members": len(members),
        "aggregation": ensemble.aggregation,
        "nexlify_version": ckpt.get("nexlify_version"),
        "format_version": ckpt.get("format_version"),
    }
    return ensemble, info


def load_policy(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[DQNAgent | EnsembleAgent, dict[str, Any]]:
    """A single agent or an ensemble, whichever the file holds."""
    from nexlify.agent.dqn import load_agent

    ckpt_format = read_checkpoint(Path(path), device).get("format")
    if ckpt_format == ENSEMBLE_FORMAT:
        return load_ensemble(path, device)
    return load_agent(path, device)
