"""Model selection in the pipeline by walk-forward validation (``--validation walk-forward``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexlify.agent.dqn import read_checkpoint
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError
from nexlify.pipeline.auto_retrain import run_pipeline, validation_folds
from nexlify.pipeline.data_choice import split_market
from tests.test_pipeline import tiny_config

WALK_FORWARD = {"validation": "walk-forward", "validation_folds": 3,
                "validation_embargo_bars": 5}  # fmt: skip


def _market(config: Any) -> Any:
    return synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)


def test_folds_tile_the_validation_days_and_train_only_before_each_window(
    tmp_path: Path,
) -> None:
    config = tiny_config(tmp_path, pipeline=WALK_FORWARD)
    market = _market(config)
    train, val, _ = split_market(market, config.data)
    folds = validation_folds(market, config)
    assert len(folds) == 3
    starts = [int(np.searchsorted(market.time, f.val.time[0])) for f in folds]
    assert starts == [train.n_bars, train.n_bars + 80, train.n_bars + 160]  # 240 bars / 3
    assert sum(f.val.n_bars for f in folds) == val.n_bars
    assert folds[-1].val.time[-1] == val.time[-1]
    for fold, start in zip(folds, starts, strict=True):
        assert fold.train.time[0] == market.time[0]  # anchored: training grows
        assert fold.train.n_bars == start - 5  # the embargo is left out
        assert fold.train.time[-1] < fold.val.time[0]

    holdout = validation_folds(market, tiny_config(tmp_path))
    assert len(holdout) == 1 and holdout[0].train.n_bars == train.n_bars


def test_windows_shorter_than_an_episode_are_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, pipeline={**WALK_FORWARD, "validation_folds": 6})
    with pytest.raises(ConfigError, match="shorter than an episode"):
        validation_folds(_market(config), config)
    with pytest.raises(ConfigError, match="validation_folds"):
        tiny_config(tmp_path, pipeline={"validation_folds": 1})
    with pytest.raises(ConfigError, match="validation"):
        tiny_config(tmp_path, pipeline={"validation": "kfold"})


def test_the_pipeline_selects_on_the_mean_out_of_sample_score_of_the_folds(
    tmp_path: Path,
) -> None:
    config = tiny_config(tmp_path, pipeline={**WALK_FORWARD, "max_iterations": 1})
    out = Path(config.pipeline.output_dir)
    out.mkdir(parents=True)
    summary = run_pipeline(config, _market(config), logging.getLogger("test"), out)
    assert summary["validation"]["method"] == "walk-forward"
    assert len(summary["validation"]["folds"]) == 3
    for run in summary["initial_runs"]:
        scores = [f["val_score"] for f in run["folds"]]
        assert len(scores) == 3
        assert run["val_score"] == pytest.approx(np.mean(scores))
        # Each fold's model was validated on its own window and saved in its own folder.
        for k, fold in enumerate(run["folds"], start=1):
            assert Path(fold["model_path"]).parent.name == f"fold_{k}"
            assert read_checkpoint(Path(fold["model_path"]))["metrics"]["score"] == pytest.approx(
                fold["val_score"]
            )
        assert run["model_path"] == run["folds"][-1]["model_path"]  # the newest data's model
    best = max(summary["initial_runs"], key=lambda r: r["val_score"])
    assert summary["best_initial_score"] == best["val_score"]
    iteration = summary["retraining_iterations"][0]
    assert iteration["score"] == pytest.approx(
        np.mean([f["val_score"] for f in iteration["folds"]])
    )
    # Each iteration's fold k continues from the best candidate's fold-k model.
    for fold in iteration["folds"]:
        assert Path(fold["model_path"]).is_file()
    for entry in summary["baselines"].values():
        assert entry["val_score"] == pytest.approx(np.mean(entry["fold_scores"]))
    assert (out / "final_model.pt").is_file()
