"""Excess return over cash with a block-bootstrap interval; the no-edge gate (deflated Sharpe)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.ensemble import load_policy
from nexlify.data.sources import synthetic_market
from nexlify.errors import CheckpointError
from nexlify.evaluation.edge import (
    describe_edge,
    describe_market,
    edge_verdict,
    excess_daily_return,
    market_line,
    read_model_edge,
    write_model_edge,
)
from nexlify.evaluation.stats import (
    bootstrap_ci,
    daily_returns,
    stationary_bootstrap_ci,
    stationary_bootstrap_indices,
)
from nexlify.market.evaluate import EvaluationResult

EULER = 0.5772156649015329


def test_daily_returns_by_hand() -> None:
    # days 0 0 1 1 2: day closes 101, 99, 100, the first measured from the start (100)
    r = daily_returns([100.0, 101.0, 102.0, 99.0, 100.0], [0, 0, 1, 1, 2])
    np.testing.assert_allclose(r, [0.01, 99 / 101 - 1, 100 / 99 - 1])
    # the start is itself a day's last point: no zero return from it to itself
    np.testing.assert_allclose(daily_returns([100.0, 110.0, 121.0], [0, 1, 2]), [0.1, 0.1])
    with pytest.raises(ValueError, match="decrease"):
        daily_returns([1.0, 2.0], [1, 0])


def test_stationary_bootstrap_resamples_wrapped_blocks() -> None:
    rng = np.random.default_rng(0)
    one_block = stationary_bootstrap_indices(10, 50, mean_block=1e12, rng=rng)
    first = one_block[:, :1]
    np.testing.assert_array_equal(one_block, (first + np.arange(10)) % 10)  # a rotation
    idx = stationary_bootstrap_indices(1000, 200, mean_block=5.0, rng=rng)
    continues = np.mean(idx[:, 1:] == (idx[:, :-1] + 1) % 1000)
    assert continues == pytest.approx(1 - 1 / 5, abs=0.02)  # a new block with prob 1/5


def test_stationary_interval_is_wider_for_trending_returns() -> None:
    # An AR(1) series with strong positive autocorrelation: the iid bootstrap understates the
    # uncertainty of its mean; the block bootstrap does not (by about sqrt((1+phi)/(1-phi))).
    rng = np.random.default_rng(1)
    x = np.zeros(1500)
    for t in range(1, x.size):
        x[t] = 0.8 * x[t - 1] + rng.normal(0, 0.01)
    low, high = stationary_bootstrap_ci(x, mean_block=25.0, seed=2)
    iid_low, iid_high = bootstrap_ci(x, np.mean, seed=2)
    assert low < x.mean() < high
    assert (high - low) > 2 * (iid_high - iid_low)
    assert stationary_bootstrap_ci(x, seed=5) == stationary_bootstrap_ci(x, seed=5)


def _run(data, equity: np.ndarray, start: int = 0) -> EvaluationResult:  # type: ignore[no-untyped-def]
    return EvaluationResult(metrics=[], equity_curves=[equity], trades=[[]], risk=[{}],
                            starts=[start])  # fmt: skip


def _n_days(data) -> int:  # type: ignore[no-untyped-def]
    """UTC days the curve ends, less the start's day when the start is its last bar."""
    days = data.time // 86_400
    return len(np.unique(days)) - int(days[0] != days[1])


def test_cash_has_zero_excess_return() -> None:
    data = synthetic_market(("BTC/USDT",), "1h", seed=0, days=20)
    excess = excess_daily_return(data, _run(data, np.full(data.n_bars, 1000.0)))
    assert excess["mean_pct"] == 0.0 and (excess["low_pct"], excess["high_pct"]) == (0.0, 0.0)
    assert excess["n_days"] == _n_days(data) > 3 and "stationary bootstrap" in excess["method"]


def test_the_market_line_of_the_market_itself_and_of_half_of_it() -> None:
    """Buy-and-hold against itself has beta 1 and no alpha; an account with half its equity in
    the basket (the curve's moves halved, day by day) beta 1/2; cash beta 0."""
    from nexlify.config import MarketConfig
    from nexlify.market.baselines import run_baseline

    data = synthetic_market(("BTC/USDT", "ETH/USDT"), "1h", seed=4, days=40)
    market = MarketConfig()
    hold = run_baseline("buy_and_hold", data, market, episode_length=0)
    itself = market_line(data, hold, market, seed=1)
    assert itself["beta"] == pytest.approx(1.0) and itself["alpha_daily_pct"] == pytest.approx(
        0.0, abs=1e-12)  # fmt: skip
    curve = hold.equity_curves[0]
    half = curve[0] * np.cumprod(np.r_[1.0, 1.0 + 0.5 * (curve[1:] / curve[:-1] - 1.0)])
    halved = market_line(data, _run(data, half, hold.starts[0]), market, seed=1)
    assert 0.45 < halved["beta"] < 0.55  # bar by bar half, so about half of each day's return
    cash = market_line(data, _run(data, np.full(curve.size, 1000.0), hold.starts[0]), market)
    assert cash["beta"] == pytest.approx(0.0, abs=1e-12) and cash["alpha_ci95_pct"] == [0.0, 0.0]
    assert "beta 1.00" in describe_market(itself) and "alpha +0.0000%/day" in describe_market(
        itself)  # fmt: skip
    short = market_line(data, _run(data, curve[:-30], hold.starts[0]), market)
    assert short["beta"] is None and "differ" in short["why"]
    assert describe_market(short).startswith("exposure to buy-and-hold: n/a (")


def test_deflated_sharpe_gate_by_hand() -> None:
    data = synthetic_market(("BTC/USDT",), "1h", seed=0, days=30)
    rng = np.random.default_rng(3)
    r = rng.normal(0.0004, 0.002, data.n_bars - 1)
    equity = 1000.0 * np.concatenate([[1.0], np.cumprod(1 + r)])
    trials = [3.0, -1.0, 0.5, 2.0]  # annualised Sharpe of the 4 candidates scored
    edge = edge_verdict(data, _run(data, equity), trials)
    # by hand: per-bar Sharpe, moments, expected best of 4 unskilled, PSR against it
    scale = math.sqrt(365 * 24)
    sr = r.mean() / r.std(ddof=1)
    z = (r - r.mean()) / r.std()
    skew, kurt = (z**3).mean(), (z**4).mean()
    v = np.var(np.array(trials) / scale, ddof=1)
    inv = NormalDist().inv_cdf
    sr0 = math.sqrt(v) * ((1 - EULER) * inv(1 - 1 / 4) + EULER * inv(1 - 1 / (4 * math.e)))
    dsr = NormalDist().cdf(
        (sr - sr0) * math.sqrt(r.size - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    )
    assert edge["p"] == pytest.approx(1 - dsr, rel=1e-9)
    assert edge["trials"] == 4 and edge["test"] == "deflated_sharpe"
    assert edge["sharpe"] == pytest.approx(sr * scale, rel=1e-9)
    assert edge["sharpe_luck_alone"] == pytest.approx(sr0 * scale, rel=1e-9)
    assert edge["found"] == (1 - dsr < 0.05)
    assert edge["excess_daily_return"]["n_days"] == _n_days(data)


def test_the_gate_finds_a_steady_edge_and_not_noise_among_many_trials() -> None:
    data = synthetic_market(("BTC/USDT",), "1h", seed=0, days=90)
    rng = np.random.default_rng(4)
    steady = 1000.0 * np.cumprod(np.concatenate([[1.0], 1 + rng.normal(3e-4, 1e-3, 2159)]))
    assert edge_verdict(data, _run(data, steady[: data.n_bars]), [5.0, 1.0, -2.0])["found"]
    noise = 1000.0 * np.cumprod(np.concatenate([[1.0], 1 + rng.normal(2e-5, 3e-3, 2159)]))
    # the best of 40 candidates whose Sharpe ratios spread by ~2: luck alone explains it
    trials = list(rng.normal(0.0, 2.0, 40))
    edge = edge_verdict(data, _run(data, noise[: data.n_bars]), trials)
    assert not edge["found"] and edge["p"] > 0.05
    assert describe_edge(edge).startswith("NO EDGE OVER CASH")
    flat = edge_verdict(data, _run(data, np.full(data.n_bars, 1000.0)), trials)
    assert not flat["found"] and flat["sharpe"] == 0.0


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    agent = DQNAgent(8, 3, AgentConfig(hidden_sizes=(8,)), seed=0)
    return agent.save(tmp_path / "final_model.pt", extra={"pairs": ["BTC/USDT"]})


def test_the_verdict_rides_in_the_checkpoint(saved_model: Path) -> None:
    assert read_model_edge(saved_model) is None  # no verdict, no summary: unknown
    before, _ = load_policy(saved_model)
    edge = {"found": False, "test": "deflated_sharpe", "p": np.float64(0.4), "trials": 7}
    write_model_edge(saved_model, edge)
    assert read_model_edge(saved_model) == {**edge, "p": 0.4}
    after, meta = load_policy(saved_model)  # still a loadable model, same weights
    assert meta["extra"]["pairs"] == ["BTC/USDT"]
    for a, b in zip(before.online.parameters(), after.online.parameters(), strict=True):
        assert bool((a == b).all())


def test_the_verdict_from_the_summary_next_to_the_model(saved_model: Path) -> None:
    summary = saved_model.parent / "complete_training_summary.json"
    summary.write_text(json.dumps({"final_model_path": "elsewhere/other.pt", "edge": {"found": 1}}))
    assert read_model_edge(saved_model) is None  # that summary is about another model
    edge = {"found": True, "test": "deflated_sharpe", "p": 0.01}
    summary.write_text(json.dumps({"final_model_path": str(saved_model), "edge": edge}))
    assert read_model_edge(saved_model) == edge
    with pytest.raises(CheckpointError, match=r"missing\.pt"):
        read_model_edge(saved_model.parent / "missing.pt")
