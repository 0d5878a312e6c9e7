"""Episode metrics and the validation score, against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nexlify.market.metrics import (
    EpisodeMetrics,
    annualised_sharpe,
    annualised_sortino,
    average_metrics,
    compute_metrics,
    max_drawdown_pct,
    profit_factor,
    validation_score,
)

SQRT_BPY_1H = math.sqrt(8760.0)  # 93.59487165438073


def make_metrics(**overrides: float) -> EpisodeMetrics:
    values: dict[str, float] = {
        "total_return_pct": 0.0,
        "sharpe": 0.0,
        "sortino": 0.0,
        "max_drawdown_pct": 0.0,
        "win_rate": 0.0,
        "profit_factor": 0.0,
        "n_trades": 0,
        "exposure": 0.0,
        "fees_paid": 0.0,
        "final_equity": 10_000.0,
    }
    values.update(overrides)
    return EpisodeMetrics(**values)  # type: ignore[arg-type]


def test_five_point_equity_curve_by_hand() -> None:
    equity = np.array([100.0, 110.0, 99.0, 99.0, 108.9])
    # returns r = [+0.10, -0.10, 0.00, +0.10]
    # mean = 0.1/4 = 0.025
    # deviations 0.075, -0.125, -0.025, 0.075 -> squares sum 0.0275 -> var (ddof=1) 0.0275/3
    # std = 0.0957427108; per-bar Sharpe 0.025/0.0957427108 = 0.2611164
    # annualised (1h: 8760 bars/year) * 93.5948717 = 24.4391638
    # downside dev = sqrt(mean([0, 0.01, 0, 0])) = sqrt(0.0025) = 0.05
    # Sortino = 0.025/0.05 * 93.5948717 = 46.7974358
    # running peak 100, 110, 110, 110, 110 -> max drawdown (110 - 99)/110 = 10%
    # total return 108.9/100 - 1 = 8.9%
    pnl = np.array([5.0, -2.0, 3.0, -1.0, 0.0])
    m = compute_metrics(equity, pnl, fees_paid=1.25, exposure=0.75, timeframe="1h")
    assert m.total_return_pct == pytest.approx(8.9)
    assert m.sharpe == pytest.approx(24.439163800603474, rel=1e-9)
    assert m.sortino == pytest.approx(46.79743582719036, rel=1e-9)
    assert m.max_drawdown_pct == pytest.approx(10.0)
    # pnl: 2 winners of 5 (a zero pnl is not a win); gross profit 8, gross loss 3 -> 8/3
    assert m.win_rate == pytest.approx(0.4)
    assert m.profit_factor == pytest.approx(8.0 / 3.0)
    assert m.n_trades == 5
    assert m.exposure == 0.75
    assert m.fees_paid == 1.25
    assert m.final_equity == pytest.approx(108.9)


def test_helpers_match_the_hand_numbers() -> None:
    r = [0.1, -0.1, 0.0, 0.1]
    assert annualised_sharpe(r, "1h") == pytest.approx(0.025 / 0.0957427107756338 * SQRT_BPY_1H)
    assert annualised_sortino(r, "1h") == pytest.approx(0.5 * SQRT_BPY_1H)
    # daily bars: 365 per year
    assert annualised_sharpe(r, "1d") == pytest.approx(0.2611164 * math.sqrt(365.0), rel=1e-6)
    # peak 120 then 90: 25%; later peak 150 then 135: 10% -> 25
    assert max_drawdown_pct([100, 120, 90, 150, 135]) == pytest.approx(25.0)
    assert max_drawdown_pct([100, 101, 102]) == 0.0


def test_flat_equity_and_no_trades() -> None:
    m = compute_metrics(np.full(10, 1000.0), np.array([]), 0.0, 0.0, "1h")
    assert m.sharpe == 0.0
    assert m.sortino == 0.0
    assert m.max_drawdown_pct == 0.0
    assert m.total_return_pct == 0.0
    assert m.win_rate == 0.0
    assert m.profit_factor == 0.0
    assert m.n_trades == 0


def test_degenerate_curves_give_zero_ratios() -> None:
    # one return only: Sharpe and Sortino undefined -> 0
    m = compute_metrics([100.0, 105.0], [5.0], 0.0, 1.0, "1h")
    assert (m.sharpe, m.sortino) == (0.0, 0.0)
    assert m.total_return_pct == pytest.approx(5.0)
    # a constant +1% per bar: std is rounding noise, treated as zero; no losing bar -> Sortino 0
    steady = 100.0 * 1.01 ** np.arange(50)
    assert annualised_sharpe(steady[1:] / steady[:-1] - 1.0, "1h") == 0.0
    assert annualised_sortino(steady[1:] / steady[:-1] - 1.0, "1h") == 0.0
    # blown-up account that stays at 0: no NaN, drawdown 100%
    m = compute_metrics([100.0, 50.0, 0.0, 0.0], [-100.0], 0.0, 1.0, "1h")
    assert math.isfinite(m.sharpe) and math.isfinite(m.sortino)
    assert m.max_drawdown_pct == pytest.approx(100.0)
    assert m.total_return_pct == pytest.approx(-100.0)


def test_profit_factor_edge_cases() -> None:
    assert profit_factor([]) == 0.0
    assert profit_factor([0.0, 0.0]) == 0.0
    assert profit_factor([-1.0, -2.0]) == 0.0
    assert profit_factor([1.0, 2.0]) == math.inf
    assert profit_factor([6.0, -2.0, -1.0]) == pytest.approx(2.0)


def test_to_dict_is_json_safe() -> None:
    m = compute_metrics([100.0, 101.0, 103.0], [1.0, 2.0], 0.1, 0.5, "1h")
    assert m.profit_factor == math.inf
    d = m.to_dict()
    assert d["profit_factor"] is None
    assert d["n_trades"] == 2
    assert set(d) == {
        "total_return_pct",
        "sharpe",
        "sortino",
        "max_drawdown_pct",
        "win_rate",
        "profit_factor",
        "n_trades",
        "exposure",
        "fees_paid",
        "final_equity",
    }
    json.dumps(d, allow_nan=False)


def test_validation_score_by_hand() -> None:
    a = make_metrics(total_return_pct=10.0, sharpe=2.0, win_rate=0.6, max_drawdown_pct=5.0)
    b = make_metrics(total_return_pct=-4.0, sharpe=-1.0, win_rate=0.4, max_drawdown_pct=15.0)
    # avg_return 3, avg_sharpe 0.5, avg_win_rate 0.5, avg_drawdown 10
    # score = 3*0.4 + 0.5*10*0.3 + 0.5*100*0.2 - 10*0.1 = 1.2 + 1.5 + 10 - 1 = 11.7
    assert validation_score([a, b]) == pytest.approx(11.7)
    # a single episode: 10*0.4 + 2*3 + 0.6*20 - 5*0.1 = 4 + 6 + 12 - 0.5 = 21.5
    assert validation_score([a]) == pytest.approx(21.5)
    with pytest.raises(ValueError):
        validation_score([])


def test_average_metrics() -> None:
    a = make_metrics(
        total_return_pct=10.0,
        sharpe=2.0,
        sortino=3.0,
        win_rate=0.6,
        max_drawdown_pct=5.0,
        profit_factor=2.0,
        n_trades=10,
        exposure=0.5,
        fees_paid=4.0,
    )
    b = make_metrics(total_return_pct=-4.0, profit_factor=math.inf, n_trades=3, fees_paid=2.0)
    c = make_metrics(profit_factor=1.0, n_trades=2)
    avg = average_metrics([a, b, c])
    assert avg["avg_return"] == pytest.approx(2.0)
    assert avg["avg_sharpe"] == pytest.approx(2.0 / 3.0)
    assert avg["avg_sortino"] == pytest.approx(1.0)
    assert avg["avg_win_rate"] == pytest.approx(0.2)
    assert avg["avg_drawdown"] == pytest.approx(5.0 / 3.0)
    assert avg["avg_trades"] == pytest.approx(5.0)
    assert avg["avg_profit_factor"] == pytest.approx(1.5)  # inf left out: (2 + 1)/2
    assert avg["avg_exposure"] == pytest.approx(0.5 / 3.0)
    assert avg["avg_fees"] == pytest.approx(2.0)
    assert avg["n_episodes"] == 3
    assert average_metrics([b])["avg_profit_factor"] == 0.0


@pytest.mark.parametrize(
    ("equity", "pnl", "fees", "exposure", "match"),
    [
        ([], [], 0.0, 0.0, "equity"),
        ([0.0, 1.0], [], 0.0, 0.0, "equity"),
        ([100.0, -1.0], [], 0.0, 0.0, "equity"),
        ([100.0, float("nan")], [], 0.0, 0.0, "equity"),
        ([[100.0, 101.0]], [], 0.0, 0.0, "equity"),
        ([100.0, 101.0], [float("inf")], 0.0, 0.0, "trade_pnl"),
        ([100.0, 101.0], [], -1.0, 0.0, "fees_paid"),
        ([100.0, 101.0], [], 0.0, 1.5, "exposure"),
    ],
)
def test_invalid_inputs(
    equity: list[float], pnl: list[float], fees: float, exposure: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(np.asarray(equity), np.asarray(pnl), fees, exposure, "1h")
