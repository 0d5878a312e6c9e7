"""The pipeline's no-edge gate: the final model against cash, with every candidate a trial."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexlify.agent.dqn import load_agent
from nexlify.evaluation.edge import describe_edge, read_model_edge
from nexlify.pipeline import auto_retrain
from tests.test_pipeline import fake_unit_factory, run_tiny


def test_the_summary_and_the_final_model_carry_the_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="test"):
        summary = run_tiny(tmp_path, pipeline={"ensemble_size": 2})
    edge = summary["edge"]
    n_iterations = len(summary["retraining_iterations"])
    assert edge["test"] == "deflated_sharpe" and isinstance(edge["found"], bool)
    # every validation of every candidate was a chance to be picked: each is a trial
    units = summary["initial_runs"] + summary["retraining_iterations"]
    validations = sum(len([h for h in u["history"] if "val_avg_sharpe" in h]) for u in units)
    assert validations > 2 + n_iterations
    assert edge["trials"] == validations + ("ensemble" in summary)
    assert edge["p"] == pytest.approx(1 - edge["deflated_sharpe"])
    pbo = edge["pbo"]
    assert pbo["candidates"] == 2 + n_iterations and pbo["n_blocks"] == 8
    assert 0.0 <= pbo["value"] <= 1.0
    alpha_low = edge["market"]["alpha_ci95_pct"][0]
    assert edge["found"] == (edge["p"] < 0.05 and pbo["value"] <= 0.5 and alpha_low > 0)
    assert edge["period"]["start"] == summary["validation_window"]["start"]
    assert edge["excess_daily_return"]["n_days"] >= 9
    line = edge["market"]  # the model's exposure to buy-and-hold over the same bars
    low, high = line["alpha_ci95_pct"]
    assert math.isfinite(line["beta"]) and low <= line["alpha_daily_pct"] <= high
    assert "beyond its exposure to buy-and-hold (beta" in describe_edge(edge)
    on_disk = json.loads((tmp_path / "out" / auto_retrain.SUMMARY_FILE).read_text())
    assert on_disk["edge"] == edge
    final = Path(summary["final_model_path"])
    assert read_model_edge(final) == edge  # stored in the checkpoint itself
    _, meta = load_agent(final)
    assert meta["extra"]["edge"] == edge and meta["extra"]["pairs"] == ["BTC/USDT"]
    last = caplog.records[-1]
    assert "EDGE OVER CASH" in last.getMessage()
    assert last.levelno == (logging.INFO if edge["found"] else logging.WARNING)
    baselines = summary["baselines"]
    assert baselines["cash"]["excess_daily_return"]["mean_pct"] == 0.0
    assert baselines["cash"]["val_metrics"]["avg_sharpe"] == 0.0
    hold = baselines["buy_and_hold"]["excess_daily_return"]
    assert hold["n_days"] >= 9 and hold["low_pct"] < hold["mean_pct"] < hold["high_pct"]
    report = (tmp_path / "out" / "training_report.md").read_text()
    assert "Edge over cash:" in report and f"p = {edge['p']:.3f}" in report
    assert (
        f"(beta {line['beta']:.2f}): alpha" in report
        and f"(beta {line['beta']:.2f})" in last.getMessage()
    )


def test_a_gate_that_cannot_run_says_no_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake, _ = fake_unit_factory([10, 12, 11, 11.5], tmp_path)  # model files that do not load
    monkeypatch.setattr(auto_retrain, "train_unit", fake)
    with caplog.at_level(logging.INFO, logger="test"):
        summary = run_tiny(tmp_path, pipeline={"max_iterations": 2, "ensemble_size": 0})
    edge = summary["edge"]
    assert edge["found"] is False and "CheckpointError" in edge["error"]
    assert any(r.levelno == logging.ERROR and "edge test" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert caplog.records[-1].getMessage().startswith("NO EDGE SHOWN")


def test_the_train_command_ends_with_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nexlify.cli import main

    code = main(["train", "--quick-test", "--automated", "--output-dir", str(tmp_path / "run"),
                 "--initial-episodes", "2", "--retrain-episodes", "1", "--max-iterations", "1",
                 "--episode-length", "168", "--workers", "1"])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "run" / auto_retrain.SUMMARY_FILE).read_text())
    last = " ".join(capsys.readouterr().err.split()).rsplit("SYNTHETIC market", 1)[-1]
    expected = "EDGE OVER CASH" if summary["edge"]["found"] else "NO EDGE OVER CASH"
    assert expected in last and f"p = {summary['edge']['p']:.3f}" in last


def test_an_overfit_selection_claims_no_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deflated Sharpe that passes is overruled when the in-sample best candidate is the
    out-of-sample worst (PBO 1)."""
    from nexlify.evaluation import edge as edge_module

    real_verdict = edge_module.edge_verdict

    def passing(*args: object, **kwargs: object) -> dict[str, object]:
        return {**real_verdict(*args, **kwargs), "found": True}  # type: ignore[arg-type]

    def overfit(paths: list[str], data: Any, market: object) -> np.ndarray:
        # two zero-sum candidates: blocks 0-6 favour one, block 7 the other by more than all
        # of them together, so whichever half wins in sample loses out of sample (PBO 1)
        lead = np.repeat(np.array([1, 2, 4, 8, 16, 32, 64, -127]) * 1e-4, -(-data.n_bars // 8))
        lead = lead[: data.n_bars - 1] + np.random.default_rng(0).normal(0, 1e-4, data.n_bars - 1)
        return np.stack([lead, -lead], axis=1)

    monkeypatch.setattr(edge_module, "edge_verdict", passing)
    monkeypatch.setattr(edge_module, "candidate_returns", overfit)
    summary = run_tiny(tmp_path, pipeline={"ensemble_size": 0})
    assert summary["edge"]["pbo"]["value"] == 1.0
    assert summary["edge"]["found"] is False
    assert "probability of backtest overfitting" in edge_module.describe_edge(summary["edge"])


@pytest.mark.parametrize(("alpha_ci", "found"), [((-0.001, 0.004), False), ((0.0005, 0.004), True)])
def test_an_excess_the_market_explains_is_no_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alpha_ci: tuple[float, float], found: bool
) -> None:
    """A deflated Sharpe that passes, a selection that is not overfit, and an alpha beyond
    buy-and-hold whose interval includes 0 (a model long part of a rising market): no edge.
    With the interval above 0 the same figures are an edge."""
    from nexlify.evaluation import edge as edge_module

    real_verdict = edge_module.edge_verdict

    def passing(*args: object, **kwargs: object) -> dict[str, object]:
        return {**real_verdict(*args, **kwargs), "found": True, "p": 0.01}  # type: ignore[arg-type]

    def line(*args: object, **kwargs: object) -> dict[str, object]:
        return {"beta": 0.04, "alpha_daily_pct": 0.0015, "alpha_ci95_pct": list(alpha_ci)}

    monkeypatch.setattr(edge_module, "edge_verdict", passing)
    monkeypatch.setattr(edge_module, "market_line", line)
    monkeypatch.setattr(edge_module, "overfitting_check", lambda returns: {"value": 0.1,
                        "candidates": 2})  # fmt: skip
    summary = run_tiny(tmp_path, pipeline={"ensemble_size": 0})
    assert summary["edge"]["found"] is found
    text = describe_edge(summary["edge"])
    assert text.startswith("EDGE OVER CASH:" if found else "NO EDGE OVER CASH BEYOND THE MARKET'S")
    assert ("(no edge unless above 0)" in text) is not found
    assert read_model_edge(Path(summary["final_model_path"]))["found"] is found
