"""fp16's gradient scaler in resume points: its scale and growth count decide which steps are
skipped, so a resumed fp16 run matches an uninterrupted one only when they come back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.data.sources import synthetic_market
from nexlify.pipeline.data_choice import split_market
from nexlify.train.resume import (
    RESUME_FILE,
    ResumePoint,
    learner_state,
    load_learner_state,
)
from nexlify.train.trainer import Trainer
from tests.test_pipeline import tiny_config

LOG = logging.getLogger("test")


def _agent_with_cpu_scaler() -> DQNAgent:
    """A small agent whose scaler is a real, enabled GradScaler on the CPU (fp16 training itself
    needs CUDA; the state handling is the same)."""
    agent = DQNAgent(6, 3, AgentConfig(hidden_sizes=(8,)), "cpu", seed=0)
    agent.grad_scaler = torch.amp.GradScaler("cpu")
    assert agent.grad_scaler.is_enabled()
    return agent


def test_the_grad_scaler_state_round_trips_through_a_resume_point(tmp_path: Path) -> None:
    agent = _agent_with_cpu_scaler()
    assert agent.grad_scaler is not None
    default = agent.grad_scaler.state_dict()
    # a scale backed off three times and a growth count mid-interval, as after inf steps
    saved = {**default, "scale": 8192.0, "_growth_tracker": 37}
    agent.grad_scaler.load_state_dict(saved)
    point = ResumePoint(tmp_path / RESUME_FILE, "unit", replay=False, log=LOG, label="u")
    point.save({"learner": learner_state(agent)})

    fresh = _agent_with_cpu_scaler()
    assert fresh.grad_scaler is not None and fresh.grad_scaler.state_dict() == default
    loaded = point.load()
    assert loaded is not None
    load_learner_state(fresh, loaded["learner"])
    assert fresh.grad_scaler.state_dict() == saved
    assert fresh.grad_scaler.get_scale() == 8192.0


def test_an_agent_without_a_scaler_saves_none_and_loads_older_files() -> None:
    agent = DQNAgent(6, 3, AgentConfig(hidden_sizes=(8,)), "cpu", seed=0)
    state = learner_state(agent)
    assert agent.grad_scaler is None and state["grad_scaler"] is None
    scaled = _agent_with_cpu_scaler()
    assert scaled.grad_scaler is not None
    before = scaled.grad_scaler.state_dict()
    older = {k: v for k, v in state.items() if k != "grad_scaler"}  # written before the field
    load_learner_state(scaled, older)
    assert scaled.grad_scaler.state_dict() == before


class _StopHereError(Exception):
    pass


def _fp16_trainer(tmp_path: Path) -> Trainer:
    config = tiny_config(tmp_path, agent={"amp": "fp16"})
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    train_data, val_data, _ = split_market(market, config.data)
    return Trainer(train_data, val_data, config.market, config.agent, num_envs=4, eval_every=4,
                   seed=0, device="cuda", practices=config.train)  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs CUDA")
def test_an_fp16_unit_resumed_from_its_last_validation_equals_the_uninterrupted_unit(
    tmp_path: Path,
) -> None:
    expected = _fp16_trainer(tmp_path / "whole").train(24)
    point = ResumePoint(tmp_path / RESUME_FILE, "unit", replay=True, log=LOG, label="unit")
    validations: list[int] = []

    def stop_at_the_third(episode: int, score: float) -> None:
        validations.append(episode)
        if len(validations) == 3:
            raise _StopHereError  # the second resume point is the one used

    with pytest.raises(_StopHereError):
        _fp16_trainer(tmp_path / "cut").train(24, on_validation=stop_at_the_third, resume=point)
    resumed = _fp16_trainer(tmp_path / "again").train(24, resume=point)

    def scaler_state(result: Any) -> dict[str, Any]:
        assert result.agent.grad_scaler is not None and result.agent.grad_scaler.is_enabled()
        return dict(result.agent.grad_scaler.state_dict())

    # the growth count runs on from the cut, not from zero
    assert scaler_state(resumed) == scaler_state(expected)
    assert (resumed.transitions, resumed.gradient_steps) == (
        expected.transitions,
        expected.gradient_steps,
    )
    assert resumed.best_score == expected.best_score
    for name, tensor in expected.agent.online.state_dict().items():
        assert torch.equal(resumed.agent.online.state_dict()[name], tensor), name
