"""Rolling retraining over a test span: schedule, swaps, no look-ahead, crash-safe records."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from nexlify.data.market_data import MarketData, build_market_data
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import ConfigError, DataError, TrainingError
from nexlify.market.env import VecMarketEnv
from nexlify.market.evaluate import greedy_run
from nexlify.pipeline import rolling
from nexlify.pipeline.rolling import (
    ROLLING_FILE,
    RollingSpec,
    SwitchingPolicy,
    check_schedule,
    retrain_points,
    rolling_run,
)
from nexlify.pipeline.runs import UnitTask, train_unit
from nexlify.train.config import run_config_from_dict
from tests.helpers import FLAT, bars_market, market_config

PAIRS = ("BTC/USDT", "ETH/USDT")
TINY: dict[str, dict[str, Any]] = {
    "data": {"pairs": list(PAIRS), "timeframe": "4h"},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32,
              "buffer_size": 2000, "target_update_interval": 50},
    "train": {"num_envs": 2, "eval_every": 2, "device": "cpu", "torch_threads": 1},
    "pipeline": {"retrain_eps_start": 0.3},
}  # fmt: skip
CONFIG = run_config_from_dict(TINY)
SPEC = RollingSpec(every_days=20.0, window_days=30.0, score_days=5.0, episodes=2)
LOG = logging.getLogger("test_rolling")
DAYS = 300
TRADED_DAYS = 60


def market(change_from: pd.Timestamp | None = None) -> MarketData:
    """300 days of 4h synthetic candles; optionally every price from ``change_from`` on scaled
    (another future)."""
    frames = generate_synthetic_candles(list(PAIRS), "4h", n_bars=DAYS * 6, seed=3)
    if change_from is not None:
        for frame in frames.values():
            frame.loc[frame.index >= change_from, ["open", "high", "low", "close"]] *= 1.3
    return build_market_data(frames, "4h", source="synthetic")


def first_bar(data: MarketData) -> int:
    return data.n_bars - TRADED_DAYS * 6


@pytest.fixture(scope="module")
def initial_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny model trained on the bars before the traded span."""
    data = market()
    first = first_bar(data)
    task = UnitTask(label="initial", seed=0, episodes=2, config=CONFIG,
                    train_data=data.slice(0, first - 60), val_data=data.slice(first - 60, first),
                    model_dir=str(tmp_path_factory.mktemp("initial")))  # fmt: skip
    return str(train_unit(task)["model_path"])


def test_spec_refuses_score_bars_older_than_the_last_retrain() -> None:
    with pytest.raises(ConfigError, match=r"--retrain-score-days: 30 is not .*--retrain-every=7"):
        RollingSpec(every_days=7, score_days=30)
    with pytest.raises(ConfigError, match="--fine-tune-episodes"):
        RollingSpec(every_days=7, score_days=7, episodes=0)
    with pytest.raises(ConfigError, match="--retrain-every"):
        RollingSpec(every_days=float("nan"))


def test_schedule_in_bars_and_refusals() -> None:
    data = market()
    first = first_bar(data)
    points = retrain_points(data, first, SPEC)
    assert points[0] == first + 120 and np.all(np.diff(points) == 120)  # 20 days of 4h bars
    assert points[-1] < data.n_bars - 1
    assert check_schedule(data, first, SPEC, CONFIG, "here") == points
    too_long = RollingSpec(every_days=20.0, window_days=400.0, score_days=5.0, episodes=2)
    with pytest.raises(DataError, match=r"here: the first retrain .* needs 405 days"):
        check_schedule(data, first, too_long, CONFIG, "here")
    short = RollingSpec(every_days=20.0, window_days=5.0, score_days=5.0, episodes=2)
    with pytest.raises(DataError, match="one training episode needs 50"):
        check_schedule(data, first, short, CONFIG, "here")
    never = RollingSpec(every_days=90.0, window_days=30.0, score_days=5.0, episodes=2)
    with pytest.raises(DataError, match="no retrain would happen"):
        check_schedule(data, first, never, CONFIG, "here")


class Constant:
    def __init__(self, action: int) -> None:
        self.action = action

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return np.full(obs.shape[0], self.action, dtype=np.int64)


def test_switching_policy_picks_the_model_by_bar() -> None:
    env = VecMarketEnv(bars_market([FLAT] * 10), market_config(episode_length=2), num_envs=3,
                       autoreset=False)  # fmt: skip
    obs, _ = env.reset(options={"starts": [0, 4, 7]})
    policy = SwitchingPolicy([0, 4, 6], [Constant(0), Constant(1), Constant(2)])
    assert policy(obs, env).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        SwitchingPolicy([4, 0], [Constant(0), Constant(1)])


def test_no_swap_trades_exactly_like_the_frozen_model(initial_model: str, tmp_path: Path) -> None:
    from nexlify.agent.ensemble import load_policy

    data = market()
    first = first_bar(data)
    never = RollingSpec(every_days=20.0, window_days=30.0, score_days=5.0, episodes=2,
                        margin=1e9)  # fmt: skip
    outcome = rolling_run(initial_model, data, first, CONFIG, never, tmp_path, seed=1, log=LOG)
    assert len(outcome.retrains) == 2 and not any(r["swapped"] for r in outcome.retrains)
    traded = data.slice(first - CONFIG.market.env.obs_window, data.n_bars)
    frozen = greedy_run(load_policy(initial_model)[0], traded, CONFIG.market)
    np.testing.assert_array_equal(outcome.result.equity_curves[0], frozen.equity_curves[0])
    assert outcome.result.trades == frozen.trades


def weights(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v for k, v in state["online"].items()} if "online" in state else state


def test_retrains_swap_on_a_win_and_never_see_later_bars(
    initial_model: str, tmp_path: Path
) -> None:
    data = market()
    first = first_bar(data)
    run = rolling_run(initial_model, data, first, CONFIG, SPEC, tmp_path / "a", seed=1, log=LOG)
    records = json.loads((tmp_path / "a" / ROLLING_FILE).read_text())["retrains"]
    assert [r["k"] for r in records] == [1, 2] == [r["k"] for r in run.retrains]
    for record in records:
        assert record["swapped"] == (record["candidate_score"] > record["current_score"])
        expected = record["candidate_model"] if record["swapped"] else record["previous_model"]
        assert record["trading_model"] == expected
        assert record["train"][1] < record["score_bars"][0] < record["at"]
    # Another future after the first retrain point: the first fine-tune is unchanged.
    other = market(change_from=pd.Timestamp(records[0]["at"]))
    assert other.n_bars == data.n_bars
    run_b = rolling_run(initial_model, other, first, CONFIG, SPEC, tmp_path / "b", seed=1,
                        log=LOG)  # fmt: skip
    a, b = run.retrains[0], run_b.retrains[0]
    assert (a["current_score"], a["candidate_score"]) == (b["current_score"], b["candidate_score"])
    # ... while the second, scored on changed bars, sees the other future
    assert run.retrains[1]["current_score"] != run_b.retrains[1]["current_score"]
    wa, wb = weights(a["candidate_model"]), weights(b["candidate_model"])
    assert wa.keys() == wb.keys()
    for key in wa:
        if isinstance(wa[key], torch.Tensor):
            assert torch.equal(wa[key], wb[key]), key


def test_a_crash_mid_retrain_redoes_only_that_retrain(
    initial_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = market()
    first = first_bar(data)
    whole = rolling_run(initial_model, data, first, CONFIG, SPEC, tmp_path / "whole", seed=1,
                        log=LOG)  # fmt: skip
    calls: list[str] = []
    real = rolling.train_unit

    def crash_on_second(task: UnitTask) -> dict[str, Any]:
        calls.append(task.label)
        if task.label == "retrain_2":
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(rolling, "train_unit", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        rolling_run(initial_model, data, first, CONFIG, SPEC, tmp_path / "cut", seed=1, log=LOG)
    saved = json.loads((tmp_path / "cut" / ROLLING_FILE).read_text())["retrains"]
    assert [r["k"] for r in saved] == [1]  # the cut retrain left no record
    calls.clear()
    monkeypatch.setattr(rolling, "train_unit", real)
    monkeypatch.setattr(rolling, "train_unit", lambda task: calls.append(task.label) or real(task))
    again = rolling_run(initial_model, data, first, CONFIG, SPEC, tmp_path / "cut", seed=1,
                        log=LOG)  # fmt: skip
    assert calls == ["retrain_2"]
    assert [r["swapped"] for r in again.retrains] == [r["swapped"] for r in whole.retrains]
    np.testing.assert_array_equal(again.result.equity_curves[0], whole.result.equity_curves[0])


def test_a_diverged_fine_tune_is_discarded_and_the_model_keeps_trading(
    initial_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def diverge(task: UnitTask) -> dict[str, Any]:
        raise TrainingError("loss is NaN after 3 rollbacks")

    monkeypatch.setattr(rolling, "train_unit", diverge)
    data = market()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        run = rolling_run(initial_model, data, first_bar(data), CONFIG, SPEC, tmp_path, seed=1,
                          log=LOG)  # fmt: skip
    assert all(not r["swapped"] and r["trading_model"] == initial_model for r in run.retrains)
    assert all("fine-tune diverged: loss is NaN" in r["event"] for r in run.retrains)
    assert "the trading model keeps trading" in caplog.text


def test_open_time_of_a_bar_and_of_the_bar_after_the_data() -> None:
    data = bars_market([FLAT] * 3, start="2024-01-01 00:00")  # 1h bars
    assert data.open_time_iso(0) == "2024-01-01T00:00:00Z"
    assert data.open_time_iso(2) == "2024-01-01T02:00:00Z"
    assert data.open_time_iso(3) == "2024-01-01T03:00:00Z"  # the bar a last-close decision trades
