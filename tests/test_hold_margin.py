"""``agent.hold_margin``: greedy decisions hold unless the best action clearly beats hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent, hold_unless_clear, load_agent
from nexlify.agent.ensemble import EnsembleAgent, aggregate_q, vote
from nexlify.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = AgentConfig(hidden_sizes=(16,))


def test_hold_unless_clear_by_hand() -> None:
    q = torch.tensor([[0.0, 0.2, 0.1], [0.0, 0.5, 0.1], [0.3, 0.1, 0.2], [0.0, 0.1, 0.4]])
    chosen = q.argmax(dim=1)
    assert hold_unless_clear(q, chosen, 0.3).tolist() == [0, 1, 0, 2]
    assert hold_unless_clear(q, chosen, 0.0).tolist() == [1, 1, 0, 2]
    # a chosen action below hold (a vote can pick one) is held back by any margin >= 0
    assert hold_unless_clear(q, torch.tensor([1, 1, 1, 1]), 0.0).tolist() == [1, 1, 0, 1]


def _obs(n: int = 256) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)


def test_agent_greedy_applies_the_margin_to_its_q_values() -> None:
    plain = DQNAgent(6, 5, CFG, seed=3)
    obs = _obs()
    q = plain.q_values(obs)
    gap = q.max(axis=1) - q[:, 0]
    margin = float(np.median(gap[gap > 0]))
    banded = DQNAgent(6, 5, dataclasses.replace(CFG, hold_margin=margin), seed=3)
    expected = np.where(gap >= margin, q.argmax(axis=1), 0)
    assert np.array_equal(banded.greedy(obs), expected)
    # the band changes some decisions and keeps others, so both branches are exercised
    assert 0 < int((banded.greedy(obs) != plain.greedy(obs)).sum()) < len(obs)
    assert np.array_equal(plain.greedy(obs), q.argmax(axis=1))


@pytest.mark.parametrize("aggregation", ["mean", "vote"])
def test_ensemble_greedy_applies_the_margin_to_the_mean_q(aggregation: str) -> None:
    obs = _obs()
    members = [DQNAgent(6, 5, CFG, seed=s) for s in (1, 2, 3)]
    q_MNA = torch.stack([torch.as_tensor(m.q_values(obs)) for m in members])
    mean_q = aggregate_q(q_MNA)
    chosen = vote(q_MNA) if aggregation == "vote" else mean_q.argmax(dim=1)
    assert np.array_equal(EnsembleAgent(members, aggregation).greedy(obs), chosen.numpy())
    margin = 0.5 * float((mean_q.max(dim=1).values - mean_q[:, 0]).max())
    banded = [DQNAgent(6, 5, dataclasses.replace(CFG, hold_margin=margin), seed=s)
              for s in (1, 2, 3)]  # fmt: skip
    got = EnsembleAgent(banded, aggregation).greedy(obs)
    gap = mean_q.gather(1, chosen.view(-1, 1)).view(-1) - mean_q[:, 0]
    assert np.array_equal(got, np.where(gap.numpy() >= margin, chosen.numpy(), 0))
    assert (got == 0).sum() > (chosen.numpy() == 0).sum()


def test_the_margin_is_saved_with_the_model(tmp_path: Path) -> None:
    agent = DQNAgent(6, 5, dataclasses.replace(CFG, hold_margin=0.3), seed=3)
    loaded, _ = load_agent(agent.save(tmp_path / "m.pt"))
    assert loaded.config.hold_margin == 0.3
    assert np.array_equal(loaded.greedy(_obs()), agent.greedy(_obs()))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), True])
def test_a_bad_margin_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"agent\.hold_margin"):
        AgentConfig(hold_margin=bad)  # type: ignore[arg-type]
