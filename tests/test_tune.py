"""nexlify tune: a stored study resumes, and its best config drives the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nexlify.cli import main
from nexlify.train.config import load_run_config

pytest.importorskip("optuna")

TINY = {
    "data": {"pairs": ["BTC/USDT"], "synthetic_days": 60, "validation_days": 10},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32, "buffer_size": 2000},
    "train": {"num_envs": 2, "eval_every": 2},
    "pipeline": {"initial_runs": 1, "initial_episodes": 2, "retrain_episodes": 2,
                 "max_iterations": 1, "workers": 1},
}  # fmt: skip


def test_study_resumes_and_its_best_config_trains(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "tuning"
    args = ["tune", "--config", str(config), "--episodes", "4", "--output-dir", str(out),
            "--tune-risk"]  # fmt: skip
    assert main([*args, "--trials", "3"]) == 0
    first = json.loads((out / "tuning_summary.json").read_text())
    assert first["trials"] == 3
    assert main([*args, "--trials", "2"]) == 0  # same study, stored in tuning.db: resumed
    second = json.loads((out / "tuning_summary.json").read_text())
    assert second["trials"] == 5
    assert second["best_score"] >= first["best_score"]
    best = load_run_config(out / "best_config.yaml")
    params = second["best_params"]
    assert best.agent.learning_rate == pytest.approx(params["learning_rate"])
    assert best.market.risk.stop_loss == pytest.approx(params["stop_loss"])
    assert best.agent.hidden_sizes == (params["width"], params["width"])
    run = tmp_path / "run"
    code = main(["train", "--automated", "--config", str(out / "best_config.yaml"),
                 "--output-dir", str(run)])  # fmt: skip
    assert code == 0
    summary = json.loads((run / "complete_training_summary.json").read_text())
    assert summary["config"]["agent"]["learning_rate"] == pytest.approx(params["learning_rate"])


def test_walk_forward_objective_is_the_mean_over_the_folds(tmp_path: Path) -> None:
    import optuna

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "tuning"
    args = ["tune", "--config", str(config), "--episodes", "2", "--output-dir", str(out),
            "--trials", "2", "--validation", "walk-forward", "--validation-folds", "2",
            "--validation-embargo", "5"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "tuning_summary.json").read_text())
    assert "2 walk-forward folds" in summary["objective"]
    study = optuna.load_study(study_name="nexlify", storage=summary["storage"])
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            folds = trial.user_attrs["fold_scores"]
            assert len(folds) == 2
            assert trial.value == pytest.approx(sum(folds) / 2)
