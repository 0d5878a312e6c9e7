"""The training pipeline: output tree and summary, stopping rules, determinism, a probe market."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from nexlify.agent.dqn import load_agent
from nexlify.agent.ensemble import load_policy
from nexlify.config import EnvConfig, ExecutionConfig, MarketConfig, RiskConfig
from nexlify.data.market_data import build_market_data
from nexlify.data.sources import synthetic_market
from nexlify.data.synthetic import synthetic_trend_candles
from nexlify.errors import ConfigError
from nexlify.market.baselines import random_policy
from nexlify.market.evaluate import evaluate_policy, greedy_policy
from nexlify.pipeline import auto_retrain
from nexlify.pipeline.auto_retrain import retrain_decision, run_pipeline
from nexlify.pipeline.data_choice import split_market
from nexlify.train.config import PipelineConfig, run_config_from_dict
from nexlify.train.trainer import Trainer, envs_for, validate

TINY: dict[str, dict[str, Any]] = {
    "data": {"pairs": ["BTC/USDT"], "validation_days": 10, "synthetic_days": 60},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [32], "batch_size": 32, "learning_starts": 64,
              "buffer_size": 4000, "target_update_interval": 50},
    "train": {"num_envs": 4, "eval_every": 4, "device": "cpu", "torch_threads": 1},
    "pipeline": {"initial_runs": 2, "initial_episodes": 8, "retrain_episodes": 4,
                 "max_iterations": 2, "patience": 2, "workers": 1},
}  # fmt: skip


def tiny_config(tmp_path: Path, **sections: dict[str, Any]) -> Any:
    values = {k: dict(v) for k, v in TINY.items()}
    for name, items in sections.items():
        values[name] = {**values.get(name, {}), **items}
    values["pipeline"]["output_dir"] = str(tmp_path / "out")
    return run_config_from_dict(values)


class RecordingProgress:
    def __init__(self) -> None:
        self.updates: list[tuple[str, int, int]] = []

    def update(self, label: str, done: int, total: int) -> None:
        self.updates.append((label, done, total))


def run_tiny(
    tmp_path: Path, progress: RecordingProgress | None = None, **sections: dict[str, Any]
) -> dict[str, Any]:
    config = tiny_config(tmp_path, **sections)
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    out = Path(config.pipeline.output_dir)
    out.mkdir(parents=True)
    return run_pipeline(config, market, logging.getLogger("test"), out, progress)


def test_pipeline_writes_the_original_output_tree_and_summary(tmp_path: Path) -> None:
    progress = RecordingProgress()
    summary = run_tiny(tmp_path, progress)
    labels = [label for label, _, _ in progress.updates]
    assert labels[0] == "run_1" and "iteration_1" in labels
    out = tmp_path / "out"
    on_disk = json.loads((out / "complete_training_summary.json").read_text())
    assert on_disk["pipeline_complete"] is True
    for key in ("initial_runs", "retraining_iterations", "best_initial_score", "final_best_score",
                "total_improvement_pct", "final_model_path", "config", "data_source", "versions",
                "stop_reason", "timings", "baselines", "validation_window"):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["data_source"] == "synthetic"
    assert [r["seed"] for r in on_disk["initial_runs"]] == [42, 1042]
    for run in on_disk["initial_runs"]:
        assert {"run_id", "seed", "val_score", "train_return", "val_metrics"} <= set(run)
        assert {"avg_return", "avg_sharpe", "avg_win_rate", "avg_drawdown"} <= set(
            run["val_metrics"]
        )
        path = Path(run["model_path"])
        assert path.parent == out / "initial_runs" / f"run_{run['run_id']}"
        assert path.name.startswith("model_return") and path.suffix == ".pt"
        expected = f"model_return{run['val_metrics']['avg_return']:.2f}.pt"
        assert path.name == expected
    for it in on_disk["retraining_iterations"]:
        assert {"iteration", "score", "improvement_pct", "metrics"} <= set(it)
        assert Path(it["model_path"]).parent == out / "retraining" / f"iteration_{it['iteration']}"
    assert (out / "training.log").read_text().count("val score") >= 2
    assert (out / "training_report.md").exists() and (out / "config.yaml").exists()
    assert "Plotly.newPlot" in (out / "report.html").read_text()
    assert "report_error" not in on_disk
    final = Path(on_disk["final_model_path"])
    assert final == out / "final_model.pt"
    # The original tool's users load the weights like this.
    state = torch.load(final, weights_only=True)["model_state_dict"]
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    agent, meta = load_agent(final)  # the single network (the best member of an ensemble)
    assert meta["metrics"]["score"] == pytest.approx(summary["final_model_score"])
    assert summary["final_model_kind"] in ("single", "ensemble")
    if summary["final_model_kind"] == "single":
        assert summary["final_model_score"] == summary["final_best_score"]
    assert summary["ensemble"]["val_score"] == pytest.approx(
        validate(load_policy(out / "ensemble_model.pt")[0], *_validation(tmp_path)).score()
    )
    assert meta["extra"]["pairs"] == ["BTC/USDT"]
    # The saved model reproduces the validation score the summary reports for it.
    assert validate(agent, *_validation(tmp_path)).score() == pytest.approx(
        summary["final_best_score"]
    )
    policy, _ = load_policy(final)
    assert validate(policy, *_validation(tmp_path)).score() == pytest.approx(
        summary["final_model_score"]
    )


def _validation(tmp_path: Path) -> tuple[Any, Any]:
    config = tiny_config(tmp_path)
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    _, val, _ = split_market(market, config.data)
    return val, config.market


def fake_unit_factory(scores: list[float], tmp_path: Path) -> Any:
    calls: list[str] = []

    def fake_train_unit(task: Any, progress: Any = None) -> dict[str, Any]:
        score = scores[len(calls)]
        calls.append(task.label)
        path = Path(task.model_dir) / "model_return0.00.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(task.label.encode())
        return {"label": task.label, "seed": task.seed, "val_score": score,
                "val_metrics": {"avg_return": 0.0}, "train_return": 0.0, "best_episode": 1,
                "episodes": 1, "transitions": 1, "gradient_steps": 1, "seconds": 0.0,
                "model_path": str(path), "history": []}  # fmt: skip

    return fake_train_unit, calls


@pytest.mark.parametrize(
    ("scores", "pipeline", "reason", "iterations", "final"),
    [
        # initial runs 10, 12 -> best 12; 11 and 11.5 are not better: patience 2 stops
        ([10, 12, 11, 11.5, 20], {"patience": 2}, "patience", 2, 12.0),
        # 12 -> 15 (+25%), then 15.1 (+0.67% < 1%): a plateau
        ([10, 12, 15, 15.1, 20], {"patience": 3}, "improvement_below_threshold", 2, 15.1),
        # steady large gains: runs until max_iterations
        ([10, 12, 14, 17, 21], {"max_iterations": 3, "patience": 3}, "max_iterations", 3, 21.0),
        # a worse, then a better iteration: patience counter resets
        ([10, 12, 11, 13, 12.5, 12.9], {"patience": 2, "max_iterations": 9}, "patience", 4, 13.0),
        # negative scores: improvement is relative to |best|
        ([-10, -8, -4, -3.99], {"patience": 3}, "improvement_below_threshold", 2, -3.99),
    ],
)
def test_stopping_rules_on_controlled_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scores: list[float],
    pipeline: dict[str, Any], reason: str, iterations: int, final: float,
) -> None:  # fmt: skip
    fake, calls = fake_unit_factory(scores, tmp_path)
    monkeypatch.setattr(auto_retrain, "train_unit", fake)
    # Fake model files: no ensemble (tests/test_rainbow.py covers ensembles).
    summary = run_tiny(tmp_path, pipeline={"max_iterations": 10, "ensemble_size": 0, **pipeline})
    assert summary["stop_reason"] == reason
    assert len(summary["retraining_iterations"]) == iterations
    assert summary["final_best_score"] == pytest.approx(final)
    best_label = calls[scores.index(final)]
    assert (tmp_path / "out" / "final_model.pt").read_bytes() == best_label.encode()


def test_retrain_decision_by_hand() -> None:
    cfg = PipelineConfig(patience=2, improvement_threshold=1.0, max_iterations=5)
    d = retrain_decision(best=10.0, score=10.05, without_best=1, iteration=1, config=cfg)
    assert d.new_best and d.improvement_pct == pytest.approx(0.5)
    assert d.stop_reason == "improvement_below_threshold" and d.without_best == 0
    d = retrain_decision(best=10.0, score=9.0, without_best=1, iteration=2, config=cfg)
    assert not d.new_best and d.stop_reason == "patience"
    d = retrain_decision(best=10.0, score=12.0, without_best=1, iteration=5, config=cfg)
    assert d.new_best and d.stop_reason == "max_iterations"


@pytest.mark.slow
def test_same_seeds_give_the_same_summary(tmp_path: Path) -> None:
    a = run_tiny(tmp_path / "a")
    b = run_tiny(tmp_path / "b")
    assert [r["val_score"] for r in a["initial_runs"]] == [
        r["val_score"] for r in b["initial_runs"]
    ]
    assert [r["score"] for r in a["retraining_iterations"]] == [
        r["score"] for r in b["retraining_iterations"]
    ]
    assert a["final_best_score"] == b["final_best_score"]


@pytest.mark.slow
def test_agent_learns_to_go_long_in_a_steady_uptrend() -> None:
    frames = synthetic_trend_candles(["UP/USDT"], "1h", n_bars=3000, drift_per_bar=0.002, seed=0)
    data = build_market_data(frames, "1h", source="probe")
    train, val = data.split_last_days(20)
    market = MarketConfig(
        risk=RiskConfig(max_position=1.0, use_kelly=False, take_profit=0.0, trailing_stop=0.0),
        execution=ExecutionConfig(slippage_bps=0.0),
        env=EnvConfig(episode_length=100),
    )
    config = tiny_config(Path("."), agent={"hidden_sizes": [32], "learning_starts": 200,
                                           "learning_rate": 1e-3, "gamma": 0.9})  # fmt: skip
    trainer = Trainer(train, val, market, config.agent, num_envs=8, eval_every=20, seed=0)
    result = trainer.train(60)
    learned = evaluate_policy(greedy_policy(result.agent), val, market)
    rand = evaluate_policy(random_policy(0), val, market)
    assert learned.average()["avg_exposure"] > 0.8
    assert learned.average()["avg_return"] > 0
    assert learned.average()["avg_return"] > rand.average()["avg_return"]


@pytest.mark.slow
def test_worker_processes_give_the_same_scores_as_in_process(tmp_path: Path) -> None:
    inline = run_tiny(tmp_path / "a", pipeline={"workers": 1, "max_iterations": 0})
    progress = RecordingProgress()
    spawned = run_tiny(tmp_path / "b", progress, pipeline={"workers": 2, "max_iterations": 0})
    assert {label for label, _, _ in progress.updates} == {"run_1", "run_2"}
    assert ("run_1", 8, 8) in progress.updates and ("run_2", 8, 8) in progress.updates
    assert [r["val_score"] for r in inline["initial_runs"]] == [
        r["val_score"] for r in spawned["initial_runs"]
    ]
    assert len({r["pid"] for r in spawned["initial_runs"]}) == 2
    assert "run_1 | episode" in (tmp_path / "b" / "out" / "training.log").read_text()


def test_envs_divide_the_episode_count() -> None:
    assert envs_for(300, 8) == 6
    assert envs_for(200, 8) == 8
    assert envs_for(16, 8) == 8
    assert envs_for(3, 8) == 3
    assert envs_for(307, 8) == 8  # prime: keep the batch, overshoot by less than a round


def test_a_failing_html_report_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nexlify.report.html as report_html

    def broken(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("no plotting today")

    monkeypatch.setattr(report_html, "build_run_report", broken)
    summary = run_tiny(tmp_path, pipeline={"max_iterations": 0})
    on_disk = json.loads((tmp_path / "out" / "complete_training_summary.json").read_text())
    assert on_disk["pipeline_complete"] and on_disk["report_error"].endswith("no plotting today")
    assert Path(summary["final_model_path"]).is_file()
    assert "nexlify report" in (tmp_path / "out" / "training.log").read_text()


def test_ensemble_candidates_by_hand() -> None:
    summary = {
        "initial_runs": [{"val_score": 5.0, "model_path": "a"}, {"val_score": 9.0,
                         "model_path": "b"}, {"val_score": 7.0, "model_path": "c"}],
        "retraining_iterations": [{"score": 12.0, "model_path": "b1"},
                                  {"score": 10.0, "model_path": "b2"}],
        "best_initial_run": 2,
    }  # fmt: skip
    top = PipelineConfig(ensemble_size=3)
    best = (12.0, "b1")
    assert auto_retrain.ensemble_candidates(summary, top, best) == [
        (12.0, "b1"), (10.0, "b2"), (9.0, "b")]  # fmt: skip
    seeds = PipelineConfig(ensemble_members="seeds")
    assert auto_retrain.ensemble_candidates(summary, seeds, best) == [
        (12.0, "b1"), (7.0, "c"), (5.0, "a")]  # fmt: skip


def test_seed_ensemble_is_final_whatever_it_scores(tmp_path: Path) -> None:
    summary = run_tiny(tmp_path, pipeline={"ensemble_members": "seeds", "ensemble_size": 0})
    ensemble = summary["ensemble"]
    runs = summary["initial_runs"]
    other = [r["model_path"] for k, r in enumerate(runs) if k + 1 != summary["best_initial_run"]]
    best_single = max(
        [(r["val_score"], r["model_path"]) for r in runs]
        + [(it["score"], it["model_path"]) for it in summary["retraining_iterations"]]
    )
    assert ensemble["members"] == [best_single[1], *other]
    assert ensemble["chosen_by"] == "one model per seed"
    assert summary["final_model_kind"] == "ensemble"
    assert summary["final_model_score"] == ensemble["val_score"]


def test_seed_ensemble_needs_holdout_and_two_seeds() -> None:
    with pytest.raises(ConfigError, match="ensemble_members"):
        PipelineConfig(ensemble_members="seeds", validation="walk-forward")
    with pytest.raises(ConfigError, match="ensemble_members"):
        PipelineConfig(ensemble_members="seeds", initial_runs=1)
