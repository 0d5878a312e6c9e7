"""Statistics against worked examples (Bailey & Lopez de Prado) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexlify.evaluation.stats import (
    bootstrap_ci,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    iqm,
    market_exposure,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
)


def test_iqm_by_hand() -> None:
    # sorted: -50 1 2 3 4 5 6 100; drop 2 at each end -> mean of 2, 3, 4, 5
    assert iqm([100, 1, 2, 3, 4, 5, 6, -50]) == pytest.approx(3.5)
    assert iqm([1, 2, 3]) == pytest.approx(2.0)  # fewer than 4: plain mean
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_ci_is_seeded_and_brackets_the_statistic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    low, high = bootstrap_ci(x, seed=3)
    assert (low, high) == bootstrap_ci(x, seed=3)
    assert low < iqm(x) < high
    assert 0.7 < low < high < 1.3


def test_deflated_sharpe_ratio_paper_example() -> None:
    """Bailey & Lopez de Prado (2014), numerical example: annualised SR 2.5 over 5 years of
    daily data (T = 1250, 250 days a year), N = 100 trials whose annualised Sharpe ratios have
    variance 0.5, returns with skewness -3 and kurtosis 10: DSR = 0.9004."""
    days = 250
    sharpe = 2.5 / math.sqrt(days)
    variance = 0.5 / days
    threshold = expected_max_sharpe(100, variance)
    # sqrt(0.5/250) * ((1 - g) * Z^-1(0.99) + g * Z^-1(1 - 1/(100 e))) = 0.1132 per day
    assert threshold == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe_ratio(sharpe, 100, variance, 1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_probabilistic_sharpe_ratio_by_hand() -> None:
    # normal returns: z = (0.1 - 0) * sqrt(99) / sqrt(1 + 0.5 * 0.01) = 0.99252
    psr = probabilistic_sharpe_ratio(0.1, 0.0, 100)
    assert psr == pytest.approx(0.83953, abs=1e-4)
    assert probabilistic_sharpe_ratio(0.0, 0.0, 100) == pytest.approx(0.5)


def test_more_trials_deflate_more() -> None:
    args = {"sharpe_variance": 0.002, "n_obs": 1000}
    values = [deflated_sharpe_ratio(0.1, n, **args) for n in (2, 10, 100, 1000)]
    assert values == sorted(values, reverse=True)


def test_pbo_hand_case_with_two_blocks() -> None:
    # Two configurations, two blocks (in-sample = one block, out-of-sample = the other).
    # Config 0 wins block A and loses block B; config 1 the reverse: the in-sample winner is
    # always last out of sample -> w = 1/3, logit < 0 in both splits -> PBO = 1.
    a = np.array([[0.02, 0.00], [0.03, 0.01], [0.01, 0.00], [0.02, 0.01]])
    b = np.array([[-0.01, 0.02], [0.00, 0.03], [-0.02, 0.01], [0.00, 0.02]])
    result = probability_of_backtest_overfitting(np.vstack([a, b]), n_blocks=2)
    assert result.n_splits == 2
    assert result.pbo == 1.0
    assert result.logits == pytest.approx((math.log(0.5), math.log(0.5)))


def test_pbo_of_a_real_edge_is_zero_and_of_noise_is_about_half() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, size=(1600, 20))
    skilled = noise.copy()
    skilled[:, 7] += 0.01  # one configuration with a large, persistent edge
    assert probability_of_backtest_overfitting(skilled, n_blocks=8).pbo == 0.0
    # with no edge anywhere the in-sample winner is a coin flip out of sample: PBO ~ 0.5
    pbos = [
        probability_of_backtest_overfitting(
            np.random.default_rng(seed).normal(0, 0.01, size=(800, 20)), n_blocks=8
        ).pbo
        for seed in range(10)
    ]
    assert 0.35 < float(np.mean(pbos)) < 0.65


def test_skew_kurtosis_by_hand() -> None:
    from nexlify.evaluation.stats import skew_kurtosis

    # -1, 0, 0, 1: mean 0, population std sqrt(1/2); z = -sqrt2, 0, 0, sqrt2
    skew, kurt = skew_kurtosis([-1.0, 0.0, 0.0, 1.0])
    assert skew == pytest.approx(0.0) and kurt == pytest.approx((4 + 0 + 0 + 4) / 4)
    assert skew_kurtosis([0.0, 0.0, 3.0])[0] == pytest.approx(1 / math.sqrt(2))
    assert skew_kurtosis([0.2, 0.2, 0.2]) == (0.0, 3.0)  # flat: a normal's
    assert skew_kurtosis([0.1, 0.3]) == (0.0, 3.0)  # too few to estimate


def test_market_exposure_recovers_a_known_line() -> None:
    """``y = 0.001 + 0.5 x`` exactly: beta 0.5, alpha 0.1% a day, an interval of one point."""
    x = np.random.default_rng(0).normal(0.0, 0.02, 400)
    found = market_exposure(0.001 + 0.5 * x, x)
    assert found["beta"] == pytest.approx(0.5)
    assert found["alpha_daily_pct"] == pytest.approx(0.1)
    assert found["alpha_ci95_pct"] == pytest.approx([0.1, 0.1])
    assert found["correlation"] == pytest.approx(1.0)
    holding = market_exposure(x, x)  # holding the market: all of it is exposure
    assert (holding["beta"], holding["alpha_daily_pct"]) == pytest.approx((1.0, 0.0))


def test_part_time_exposure_to_a_rising_market_is_no_alpha() -> None:
    """A policy long a rising market on a random half of the days earns a positive mean, but
    the interval of its alpha spans 0 and its beta is about 0.5; a real 0.2%/day edge on top
    shows as an alpha whose interval lies above 0. Same seed, same figures."""
    rng = np.random.default_rng(1)
    market = rng.normal(0.002, 0.03, 1460)
    in_market = rng.random(1460) < 0.5
    luck = market * in_market
    assert luck.mean() > 0
    found = market_exposure(luck, market, seed=3)
    assert found["beta"] == pytest.approx(0.5, abs=0.05)
    low, high = found["alpha_ci95_pct"]
    assert low < 0 < high
    assert market_exposure(luck, market, seed=3) == found
    edge = market_exposure(luck + 0.002, market, seed=3)
    assert edge["alpha_ci95_pct"][0] > 0
    assert edge["beta"] == pytest.approx(found["beta"])


@pytest.mark.parametrize(
    ("returns", "market", "message"),
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], "3 returns and 2 market days differ"),
        ([0.1, 0.2], [0.1, 0.2], "2 days; at least 3"),
        ([0.1, 0.2, 0.3], [0.01, 0.01, 0.01], "never change"),
        ([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3], "non-finite"),
    ],
)
def test_market_exposure_refuses_what_it_cannot_fit(
    returns: list[float], market: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        market_exposure(returns, market)
