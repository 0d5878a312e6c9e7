"""Strategy math against numbers worked out by hand: Uniswap V3 amounts, impermanent loss, fee
share, the kinked interest-rate curve, staking epoch growth and an arbitrage round trip."""

from __future__ import annotations

import math

import pytest

from nexlify.market.strategies.arbitrage import round_trip_pnl
from nexlify.market.strategies.rates import borrow_rate, epoch_growth, supply_rate
from nexlify.market.strategies.uniswap_v3 import (
    amounts_for_liquidity,
    fee_share,
    impermanent_loss,
    in_range_fraction,
    liquidity_for_amounts,
    pool_liquidity_from_depth,
    position_value,
)

# Range [100, 400] (sqrt 10 and 20), liquidity 1000.
PA, PB, L = 100.0, 400.0, 1000.0


@pytest.mark.parametrize(
    ("price", "x", "y"),
    [
        (64.0, 50.0, 0.0),  # below the range: all base, L (1/10 - 1/20) = 50
        (100.0, 50.0, 0.0),  # at the lower edge
        (144.0, 1000 / 12 - 50, 2000.0),  # sqrt 12: x = L (1/12 - 1/20) = 33.33, y = L (12 - 10)
        (225.0, 1000 / 15 - 50, 5000.0),  # sqrt 15: x = 16.67, y = 5000
        (324.0, 1000 / 18 - 50, 8000.0),  # sqrt 18: x = 5.56, y = 8000
        (400.0, 0.0, 10_000.0),  # at the upper edge: all quote, L (20 - 10)
        (900.0, 0.0, 10_000.0),  # above the range
    ],
)
def test_uniswap_v3_amounts_at_several_prices(price: float, x: float, y: float) -> None:
    got_x, got_y = amounts_for_liquidity(L, price, PA, PB)
    assert got_x == pytest.approx(x, abs=1e-9)
    assert got_y == pytest.approx(y, abs=1e-9)


def test_liquidity_from_amounts_takes_the_binding_token() -> None:
    # At 225 the position needs 16.667 base per 5000 quote.
    assert liquidity_for_amounts(1000 / 60, 5000.0, 225.0, PA, PB) == pytest.approx(1000.0)
    # Surplus base: quote binds (x side alone would give 20*15*20/5 = 1200).
    assert liquidity_for_amounts(20.0, 5000.0, 225.0, PA, PB) == pytest.approx(1000.0)
    # Out of range only one token counts.
    assert liquidity_for_amounts(50.0, 123.0, 64.0, PA, PB) == pytest.approx(1000.0)
    assert liquidity_for_amounts(7.0, 10_000.0, 900.0, PA, PB) == pytest.approx(1000.0)


def test_impermanent_loss_for_a_price_move() -> None:
    x0, y0 = amounts_for_liquidity(L, 225.0, PA, PB)  # 16.667 base + 5000 quote = 8750
    assert position_value(L, 225.0, PA, PB) == pytest.approx(8750.0)
    # Up to 324: LP 5.556*324 + 8000 = 9800; holding 16.667*324 + 5000 = 10400 -> -600.
    assert impermanent_loss(L, 324.0, PA, PB, x0, y0) == pytest.approx(-600.0)
    # Down to 144: LP 33.33*144 + 2000 = 6800; holding 16.667*144 + 5000 = 7400 -> -600.
    assert impermanent_loss(L, 144.0, PA, PB, x0, y0) == pytest.approx(-600.0)
    # No move, no loss.
    assert impermanent_loss(L, 225.0, PA, PB, x0, y0) == pytest.approx(0.0, abs=1e-9)


def test_full_range_impermanent_loss_matches_the_v2_formula() -> None:
    # A (nearly) full range behaves like Uniswap V2: IL(k) = 2 sqrt(k) / (1 + k) - 1; k = 4: -20%.
    lo, hi, p0 = 1e-12, 1e12, 100.0
    x0, y0 = amounts_for_liquidity(1.0, p0, lo, hi)
    hold = x0 * 400.0 + y0
    loss = impermanent_loss(1.0, 400.0, lo, hi, x0, y0) / hold
    assert loss == pytest.approx(2 * math.sqrt(4) / 5 - 1, abs=1e-5)


def test_fee_share_and_pool_depth() -> None:
    assert fee_share(1000.0, 9000.0) == pytest.approx(0.1)
    # A bar of 1,000,000 volume in a 0.3% pool pays a 10% share 300.
    assert 1_000_000 * 0.003 * fee_share(1000.0, 9000.0) == pytest.approx(300.0)
    assert fee_share(0.0, 0.0) == 0.0
    # Depth: moving 10000 up 2% with L = 1e6 takes L sqrt(P) (sqrt(1.02) - 1) = 995,049 quote.
    depth = 1e6 * 100.0 * (math.sqrt(1.02) - 1.0)
    assert depth == pytest.approx(995_049.38, abs=0.01)
    assert pool_liquidity_from_depth(depth, 10_000.0) == pytest.approx(1e6)


def test_in_range_fraction_of_a_bar() -> None:
    assert in_range_fraction(90.0, 110.0, 100.0, 400.0) == pytest.approx(0.5)
    assert in_range_fraction(150.0, 160.0, 100.0, 400.0) == 1.0
    assert in_range_fraction(410.0, 420.0, 100.0, 400.0) == 0.0
    assert in_range_fraction(200.0, 200.0, 100.0, 400.0) == 1.0


# Kink at 80%, base 0, slope 1 = 4%, slope 2 = 60%, reserve factor 10%.
CURVE = (0.0, 0.04, 0.60, 0.80)


@pytest.mark.parametrize(
    ("u", "borrow", "supply"),
    [
        (0.0, 0.0, 0.0),
        (0.40, 0.02, 0.02 * 0.40 * 0.9),  # half way to the kink: 0.0072
        (0.80, 0.04, 0.04 * 0.80 * 0.9),  # at the kink: 0.0288
        (0.90, 0.34, 0.34 * 0.90 * 0.9),  # half way above: 0.04 + 0.60 * 0.5; supply 0.2754
        (1.00, 0.64, 0.64 * 0.9),  # full: 0.576
    ],
)
def test_interest_rate_curve_at_and_around_the_kink(u: float, borrow: float, supply: float) -> None:
    assert borrow_rate(u, *CURVE) == pytest.approx(borrow, abs=1e-12)
    assert supply_rate(u, *CURVE, 0.10) == pytest.approx(supply, abs=1e-12)


def test_interest_rate_curve_is_continuous_with_a_steeper_slope_after_the_kink() -> None:
    eps = 1e-6
    below, at, above = (borrow_rate(u, *CURVE) for u in (0.8 - eps, 0.8, 0.8 + eps))
    assert below == pytest.approx(at, abs=1e-6) and above == pytest.approx(at, abs=1e-5)
    assert (above - at) / eps == pytest.approx(0.60 / 0.20)  # slope 2 / (1 - U_opt) = 3
    assert (at - below) / eps == pytest.approx(0.04 / 0.80)  # slope 1 / U_opt = 0.05


def test_staking_epoch_growth_compounds_to_the_apy() -> None:
    day = 86_400.0
    g = epoch_growth(0.10, day)
    assert g == pytest.approx(1.1 ** (1 / 365) - 1)
    assert (1 + g) ** 365 == pytest.approx(1.10)


def test_arbitrage_round_trip_pnl_after_fees() -> None:
    # Buy 1 BTC at 30,000 on A, sell at 30,150 on B, 0.1% fee each side:
    # 30,150 x 0.999 - 30,000 x 1.001 = 30,119.85 - 30,030 = 89.85.
    assert round_trip_pnl(1.0, 30_000.0, 30_150.0, 0.001, 0.001) == pytest.approx(89.85)
    # A 0.2% spread does not cover 0.1% + 0.1% fees plus 5 bp slippage per leg.
    assert round_trip_pnl(1.0, 30_000.0, 30_060.0, 0.001, 0.001, 0.0005) < 0
