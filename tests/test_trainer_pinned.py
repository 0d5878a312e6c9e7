"""The trainer's behaviour pinned against runs recorded before its loop was restructured.

Each case trains a tiny run with a fixed seed and compares the resulting weights (a few
summary numbers per tensor), the validation scores and the counters with
``tests/fixtures/pinned_trainer.json``. A refactor of the loop must leave them unchanged; a
deliberate change of behaviour re-records them (``python -m tests.test_trainer_pinned
--record``) and says why in its commit.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexlify.agent.config import AgentConfig
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.sources import synthetic_market
from nexlify.train.config import TrainConfig
from nexlify.train.trainer import Trainer, TrainResult

FIXTURE = Path(__file__).parent / "fixtures" / "pinned_trainer.json"

CASES: dict[str, dict[str, Any]] = {
    "no_practices": {"practices": None, "episodes": 12},
    "defaults": {"practices": {}, "episodes": 12},
    "every_practice": {
        "practices": {
            "early_stopping_patience": 0,
            "swa_start": 0.5,
            "augment": True,
            "curriculum": True,
            "curriculum_phases": (0.2, 0.4, 0.6),
        },
        "episodes": 16,
    },
    "early_stop": {
        "practices": {
            "early_stopping_patience": 1,
            "early_stopping_min_delta": 1e9,
            "swa": False,
            "augment": False,
            "curriculum": False,
        },
        "episodes": 24,
    },
    "uniform_replay_1_step": {
        "practices": {},
        "episodes": 12,
        "agent": {"prioritized_replay": False, "n_step": 1},
    },
}


def train_case(case: dict[str, Any]) -> TrainResult:
    data = synthetic_market(["BTC/USDT", "ETH/USDT"], "1h", seed=0, days=60)
    train, val = data.split_last_days(10)
    market = MarketConfig(env=EnvConfig(episode_length=48))
    agent = AgentConfig(hidden_sizes=(16,), batch_size=32, learning_starts=64, buffer_size=4000,
                        **case.get("agent", {}))  # fmt: skip
    practices = None if case["practices"] is None else TrainConfig(**case["practices"])
    trainer = Trainer(train, val, market, agent, num_envs=4, eval_every=4, seed=3,
                      practices=practices, logger=logging.getLogger("test"))  # fmt: skip
    return trainer.train(case["episodes"])


def fingerprint(result: TrainResult) -> dict[str, Any]:
    weights = {}
    for name, tensor in result.agent.online.state_dict().items():
        values = tensor.detach().double().cpu().numpy().ravel()
        weights[name] = [float(values.sum()), float((values**2).sum()),
                         *(float(v) for v in values[:8])]  # fmt: skip
    return {
        "weights": weights,
        "val_scores": [h["val_score"] for h in result.history],
        "best_score": result.best_score,
        "counters": [result.episodes, result.transitions, result.gradient_steps,
                     result.best_episode, int(result.stopped_early), int(result.swa_selected)],
    }  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_the_pinned_run(name: str) -> None:
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE} is missing: record it with python -m tests.test_trainer_pinned")
    expected = json.loads(FIXTURE.read_text())[name]
    got = fingerprint(train_case(CASES[name]))
    assert got["counters"] == expected["counters"]
    np.testing.assert_allclose(got["val_scores"], expected["val_scores"], rtol=1e-6, atol=1e-9)
    assert got["weights"].keys() == expected["weights"].keys()
    for key, values in expected["weights"].items():
        np.testing.assert_allclose(got["weights"][key], values, rtol=1e-5, atol=1e-7,
                                   err_msg=key)  # fmt: skip


if __name__ == "__main__" and "--record" in sys.argv:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    pinned = {name: fingerprint(train_case(case)) for name, case in CASES.items()}
    FIXTURE.write_text(json.dumps(pinned, indent=1) + "\n")
    print(f"recorded {FIXTURE}")
