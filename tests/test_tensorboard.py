"""TensorBoard curves: a run folder per unit, a point per validation, read back by TensorBoard."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from nexlify.agent.config import AgentConfig
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError
from nexlify.train import tensorboard as tb
from nexlify.train.config import TrainConfig
from nexlify.train.tensorboard import TensorBoardLogger, scalar_tags, unit_log_dir
from nexlify.train.trainer import Trainer


def test_history_entries_become_namespaced_tags() -> None:
    entry = {
        "episode": 8.0, "epsilon": 0.5, "train_return_pct": -0.2, "loss": float("nan"),
        "learning_rate": 2.5e-4, "phase": 2.0, "val_score": 1.5, "val_avg_return": 0.3,
    }  # fmt: skip
    assert scalar_tags(entry) == {
        "train/epsilon": 0.5, "train/return_pct": -0.2, "train/learning_rate": 2.5e-4,
        "train/phase": 2.0, "val/score": 1.5, "val/avg_return": 0.3,
    }  # fmt: skip
    swa = {"episode": 16.0, "swa": 1.0, "val_score": 2.0, "val_avg_sharpe": 0.7}
    assert scalar_tags(swa) == {"swa/score": 2.0, "swa/avg_sharpe": 0.7}


def test_without_the_package_tensorboard_fails_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tb, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'nexlify\[tensorboard\]'"):
        tb.require_tensorboard()
    with pytest.raises(ConfigError, match="tensorboard package is not installed"):
        TensorBoardLogger(tmp_path / "tb")


@pytest.mark.slow
def test_a_tiny_run_writes_curves_that_tensorboard_reads_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = synthetic_market(["BTC/USDT"], "1h", seed=0, days=40)
    train, val = data.split_last_days(8)
    market = MarketConfig(env=EnvConfig(episode_length=48))
    agent = AgentConfig(hidden_sizes=(16,), batch_size=32, learning_starts=64, buffer_size=4000)
    practices = TrainConfig(early_stopping_patience=0, swa_start=0.5, augment=False,
                            curriculum=False)  # fmt: skip
    with TensorBoardLogger.for_unit(tmp_path, "run_1") as writer:
        result = Trainer(train, val, market, agent, num_envs=4, eval_every=4, seed=3,
                         practices=practices, logger=logging.getLogger("test"),
                         tensorboard=writer).train(8)  # fmt: skip
        writer.log_text("device", "cpu (cpu, 1 torch threads)")

    folder = unit_log_dir(tmp_path, "run_1")
    assert folder == tmp_path / "tensorboard" / "run_1" and list(folder.glob("events.out.*"))
    acc = EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val/score", "val/avg_return", "train/epsilon", "train/learning_rate",
            "train/phase", "train/return_pct", "train/loss", "swa/score"} <= tags  # fmt: skip
    checkpoints = [h for h in result.history if not h.get("swa")]
    points = acc.Scalars("val/score")
    assert [p.step for p in points] == [int(h["episode"]) for h in checkpoints] == [4, 8]
    for point, entry in zip(points, checkpoints, strict=True):
        assert math.isclose(point.value, entry["val_score"], rel_tol=1e-6, abs_tol=1e-6)
    eps = [p.value for p in acc.Scalars("train/epsilon")]
    assert eps == pytest.approx([h["epsilon"] for h in checkpoints], rel=1e-6)
    swa = [h for h in result.history if h.get("swa")]
    assert [p.value for p in acc.Scalars("swa/score")] == pytest.approx([swa[0]["val_score"]])
