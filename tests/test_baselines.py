"""Baselines: cash, a true buy-and-hold and daily trend worked out by hand; the env baselines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nexlify.config import EnvConfig, MarketConfig
from nexlify.config.strategies import StrategiesConfig
from nexlify.data.market_data import CLOSE
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError
from nexlify.market.baselines import (
    BASELINES,
    always_long_policy,
    run_baseline,
    run_baselines,
)
from nexlify.market.evaluate import evaluate_policy
from nexlify.market.rules_off import daily_close_bars, evaluate_target, trend_target
from tests.helpers import bars_market, market_config

# Daily bars (open, high, low, close) of two pairs; prices exact in float32.
OPEN_A = [99.0, 101.0, 105.0, 111.0, 107.0, 102.0]
CLOSE_A = [100.0, 104.0, 110.0, 108.0, 103.0, 101.0]
OPEN_B = [51.0, 50.0, 48.5, 47.5, 48.5, 50.5]
CLOSE_B = [50.0, 49.0, 47.0, 48.0, 50.0, 53.0]
FEE, SLIP = 0.001, 0.001  # 0.1% fee and 10 bps slippage per fill
IN, OUT = (1 + SLIP) * (1 + FEE), (1 - SLIP) * (1 - FEE)


def _bar(o: float, c: float) -> tuple[float, float, float, float]:
    return (o, max(o, c), min(o, c), c)


@pytest.fixture
def two_pairs():  # type: ignore[no-untyped-def]
    bars = [[_bar(OPEN_A[t], CLOSE_A[t]), _bar(OPEN_B[t], CLOSE_B[t])] for t in range(6)]
    return bars_market(bars, timeframe="1d")


CONFIG = market_config(fee=FEE, slippage_bps=SLIP * 10_000)


def test_cash_stays_flat(two_pairs) -> None:  # type: ignore[no-untyped-def]
    result = run_baseline("cash", two_pairs, CONFIG, episode_length=0)
    np.testing.assert_array_equal(result.equity_curves[0], np.full(6, 10_000.0))
    m = result.metrics[0]
    assert (m.total_return_pct, m.sharpe, m.n_trades, m.fees_paid, m.exposure) == (0, 0, 0, 0, 0)


def test_buy_and_hold_by_hand(two_pairs) -> None:  # type: ignore[no-untyped-def]
    # Decided after bar 0, bought at bar 1's open: 5,000 per pair, fee and slippage paid.
    qty_a = 5000 / (101.0 * IN)
    qty_b = 5000 / (50.0 * IN)
    expected = [10_000.0] + [qty_a * CLOSE_A[t] + qty_b * CLOSE_B[t] for t in range(1, 5)]
    expected.append((qty_a * 101.0 + qty_b * 53.0) * OUT)  # sold at the last close
    result = run_baseline("buy_and_hold", two_pairs, CONFIG, episode_length=0)
    np.testing.assert_allclose(result.equity_curves[0], expected, rtol=1e-12)
    m = result.metrics[0]
    assert m.n_trades == 2 and m.exposure == 1.0
    fees = 2 * 5000 / (1 + FEE) * FEE + (qty_a * 101.0 + qty_b * 53.0) * (1 - SLIP) * FEE
    assert m.fees_paid == pytest.approx(fees, rel=1e-12)
    assert m.total_return_pct == pytest.approx((expected[-1] / 10_000 - 1) * 100, rel=1e-12)
    trade = result.trades[0][0]
    assert trade["pair"] == "C0/USDT" and trade["reason"] == "end"
    assert trade["entry_price"] == pytest.approx(101.0 * (1 + SLIP))
    assert trade["pnl"] == pytest.approx(qty_a * 101.0 * OUT - 5000, rel=1e-12)


def test_trend_by_hand(two_pairs) -> None:  # type: ignore[no-untyped-def]
    # Lookback 2 days: long while today's close is above the mean of today's and yesterday's.
    # A: closes 100 104 110 108 ...: long after bars 1 and 2 -> buy at bar 2's open (105),
    # sell at bar 4's open (107). B: 49 47 48 50 53: long after bars 3, 4 and 5 -> buy at
    # bar 4's open (48.5), still long at the end: sold at the last close (53).
    target = trend_target(two_pairs, lookback_days=2)
    assert target[:, 0].tolist() == [False, True, True, False, False, False]
    assert target[:, 1].tolist() == [False, False, False, True, True, True]
    qty_a = 5000 / (105.0 * IN)
    a = [5000, 5000, qty_a * 110, qty_a * 108, qty_a * 107 * OUT, qty_a * 107 * OUT]
    qty_b = 5000 / (48.5 * IN)
    b = [5000, 5000, 5000, 5000, qty_b * 50, qty_b * 53 * OUT]
    result = evaluate_target(target, two_pairs, CONFIG, episode_length=0)
    np.testing.assert_allclose(result.equity_curves[0], np.add(a, b), rtol=1e-12)
    m = result.metrics[0]
    assert m.n_trades == 2 and m.exposure == pytest.approx(4 / 5)
    fees = 2 * 5000 / (1 + FEE) * FEE + (qty_a * 107 + qty_b * 53) * (1 - SLIP) * FEE
    assert m.fees_paid == pytest.approx(fees, rel=1e-12)
    reasons = [(t["pair"], t["reason"], t["entry_bar"], t["exit_bar"]) for t in result.trades[0]]
    assert reasons == [("C0/USDT", "signal", 2, 4), ("C1/USDT", "end", 4, 5)]
    assert m.win_rate == 1.0  # 105 -> 107 and 48.5 -> 53 both beat their costs
    assert result.trades[0][0]["pnl"] == pytest.approx(qty_a * 107 * OUT - 5000, rel=1e-12)


def test_trend_decides_once_a_day_from_the_days_last_close() -> None:
    data = synthetic_market(("BTC/USDT", "ETH/USDT"), "4h", seed=3, days=200)
    day_end = daily_close_bars(data)
    hours = (data.time[day_end] % 86_400) // 3600
    assert set(hours.tolist()) == {20}  # the 20:00 bar closes at midnight
    target = trend_target(data, lookback_days=50)
    changes = np.flatnonzero((target[1:] != target[:-1]).any(axis=1)) + 1
    assert changes.size > 0 and day_end[changes].all()  # only after a day's last bar
    closes = data.prices[day_end, 0, CLOSE].astype(np.float64)
    d = 80  # a day with 50 daily closes behind it
    assert target[np.flatnonzero(day_end)[d], 0] == (closes[d] > closes[d - 49 : d + 1].mean())


def test_trend_signal_uses_no_bar_after_the_decision() -> None:
    data = synthetic_market(("BTC/USDT",), "1h", seed=4, days=120)
    full = trend_target(data, lookback_days=10)
    assert full.any() and not full.all()
    cut = 24 * 70 + 5  # mid-day: bars after it change wildly, decisions up to it must not
    prices = data.prices.copy()
    prices[cut + 1 :] *= (
        np.random.default_rng(0)
        .uniform(0.5, 1.5, size=(data.n_bars - cut - 1, 1, 1))
        .astype(np.float32)
    )
    changed = trend_target(replace(data, prices=prices), lookback_days=10)
    np.testing.assert_array_equal(full[: cut + 1], changed[: cut + 1])
    assert (full[cut + 1 :] != changed[cut + 1 :]).any()  # the later data did matter later
    np.testing.assert_array_equal(full[:cut], trend_target(data.slice(0, cut), lookback_days=10))


def test_trend_on_a_cut_period_uses_the_history_before_it() -> None:
    data = synthetic_market(("BTC/USDT", "ETH/USDT"), "1h", seed=4, days=150)
    cut = data.slice(24 * 100, data.n_bars)  # the last 50 days: too few for a 50-day mean alone
    assert not trend_target(cut).any()
    with_history = trend_target(cut, history=data)
    np.testing.assert_array_equal(with_history, trend_target(data)[24 * 100 :])
    assert with_history.any()


def test_rules_off_baselines_use_the_same_windows_as_the_env() -> None:
    data = synthetic_market(("BTC/USDT", "ETH/USDT"), "1h", seed=0, days=40)
    config = MarketConfig(env=EnvConfig(episode_length=200, random_start=False))
    results = run_baselines(data, config)
    assert tuple(results) == BASELINES
    env_run = evaluate_policy(lambda o, e: np.zeros(e.num_envs, np.int64), data, config)
    for name, result in results.items():
        assert result.starts == env_run.starts, name
        assert [c.size for c in result.equity_curves] == [201] * len(env_run.starts), name
    # Without the 5% position cap the basket moves far more than the capped always-long.
    hold = np.array([m.total_return_pct for m in results["buy_and_hold"].metrics])
    capped = np.array([m.total_return_pct for m in results["always_long"].metrics])
    assert np.abs(hold).mean() > 5 * np.abs(capped).mean()


def test_buy_and_hold_equals_the_simulator_with_every_rule_off() -> None:
    # One pair, whole account per position, no stops, no daily limit, no ruin: the env's
    # always-long then holds the same position as buy_and_hold, through the kernel's own fills.
    data = synthetic_market(("BTC/USDT",), "1h", seed=2, days=30)
    base = market_config(fee=0.001, slippage_bps=5.0, stop_loss=0.0, take_profit=0.0,
                         trailing_stop=0.0, max_position=1.0, daily_loss_limit=1.0)  # fmt: skip
    config = replace(base, env=replace(base.env, ruin_equity=0.0))
    ours = run_baseline("buy_and_hold", data, config, episode_length=0)
    env = evaluate_policy(always_long_policy(), data, config, episode_length=0)
    np.testing.assert_allclose(ours.equity_curves[0], env.equity_curves[0], rtol=1e-9)
    assert ours.metrics[0].fees_paid == pytest.approx(env.metrics[0].fees_paid, rel=1e-9)
    assert ours.metrics[0].sharpe == pytest.approx(env.metrics[0].sharpe, rel=1e-6)
    (a,), (b,) = ours.trades[0], env.trades[0]
    for key in ("entry_bar", "exit_bar", "entry_price", "exit_price", "quantity", "pnl", "fees"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key


@pytest.mark.parametrize("pairs", [("ETH/USDT",), ("BTC/USDT", "ETH/USDT")])
def test_spot_baselines_trade_spot_in_a_market_of_books_alone(pairs: tuple[str, ...]) -> None:
    """With ``--strategies lending`` action 1 supplies the quote currency: ``always_long`` once
    took that for a buy (a lending policy under its name; with two pairs an action past the
    last one failed). It trades the pairs, with the lending book idle as in spot + lending."""
    data = synthetic_market(pairs, "1h", seed=0, days=40)
    env = EnvConfig(episode_length=200, random_start=False)
    books = MarketConfig(env=env, strategies=StrategiesConfig(enabled=("lending",)))
    spot_and_books = replace(books, strategies=StrategiesConfig(enabled=("spot", "lending")))
    for name in ("always_long", "sma_crossover"):
        alone, beside = run_baseline(name, data, books), run_baseline(name, data, spot_and_books)
        assert sum(m.n_trades for m in alone.metrics) > 0, name
        assert [m.total_return_pct for m in alone.metrics] == [
            m.total_return_pct for m in beside.metrics
        ], name
    assert run_baseline("random", data, books).metrics  # over the model's own actions


def test_unknown_baseline_names_the_choices(two_pairs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="always_long"):
        run_baseline("buy_and_sell", two_pairs, CONFIG)
