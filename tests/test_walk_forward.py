"""Walk-forward: folds train on the past only and are tested on the unseen bars that follow."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from nexlify.cli import main
from nexlify.data.sources import synthetic_market
from nexlify.pipeline.walk_forward import WalkForwardSpec, make_folds, run_walk_forward
from nexlify.train.config import run_config_from_dict

TINY = {
    "data": {"pairs": ["BTC/USDT"], "synthetic_days": 120},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32, "buffer_size": 2000},
    "train": {"num_envs": 2, "eval_every": 2},
    "pipeline": {"workers": 1},
}  # fmt: skip
SPEC = WalkForwardSpec(train_days=40, test_days=10, embargo_days=1, validation_days=8, episodes=2)


def test_folds_never_test_on_bars_they_trained_on(tmp_path: Path) -> None:
    config = run_config_from_dict(TINY)
    market = synthetic_market(("BTC/USDT",), "1h", seed=0, days=120)
    summary = run_walk_forward(config, market, SPEC, tmp_path, logging.getLogger("test"))
    folds = make_folds(market, SPEC)
    assert len(summary["folds"]) == len(folds) >= 4
    for fold, row in zip(folds, summary["folds"], strict=True):
        assert fold.test_start - fold.train_stop == 24  # the one-day embargo
        assert row["train"][1] < row["test"][0]
        assert set(row["baselines"]) == {
            "cash",
            "buy_and_hold",
            "trend",
            "always_long",
            "sma_crossover",
            "random",
        }
    tests = [(f.test_start, f.test_stop) for f in folds]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(tests))  # no overlap
    oos = summary["out_of_sample"]["model"]
    returns = [row["model"]["total_return_pct"] for row in summary["folds"]]
    assert oos["mean_total_return_pct"] == np.mean(returns)
    assert (tmp_path / "walk_forward_summary.json").exists()
    excess = summary["excess_daily_return"]  # pooled over every fold's test days
    assert set(excess) == {"model", *summary["folds"][0]["baselines"]}
    assert excess["cash"]["mean_pct"] == 0.0
    assert excess["model"]["n_days"] >= 10 * len(folds) - len(folds)
    line = summary["market_exposure"]  # each policy on buy-and-hold, the same pooled days
    assert set(line) == set(excess)
    assert line["buy_and_hold"]["beta"] == pytest.approx(1.0)
    assert line["buy_and_hold"]["alpha_daily_pct"] == pytest.approx(0.0, abs=1e-12)
    assert line["cash"]["beta"] == 0.0
    market_mean = excess["buy_and_hold"]["mean_pct"]
    for name in ("model", "always_long", "random"):  # a least-squares line runs through the means
        fitted = line[name]["alpha_daily_pct"] + line[name]["beta"] * market_mean
        assert fitted == pytest.approx(excess[name]["mean_pct"], abs=1e-12)
        assert line[name]["days"] == excess[name]["n_days"]


def test_walk_forward_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "wf"
    code = main(["walk-forward", "--config", str(config), "--train-days", "40",
                 "--test-days-per-fold", "10", "--fold-validation-days", "8", "--episodes", "2",
                 "--folds", "2", "--mode", "anchored", "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    table = " ".join(capsys.readouterr().err.split())
    assert "market beta" in table and "alpha %/day" in table and "exposure, not skill" in table
    summary = json.loads((out / "walk_forward_summary.json").read_text())
    assert summary["mode"] == "anchored" and len(summary["folds"]) == 2
    first, second = summary["folds"]
    assert first["train"][0] == second["train"][0]  # anchored: training grows from the start
