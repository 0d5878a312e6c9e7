"""Uniswap V3 ticks: the contract's Q64.96 TickMath and LiquidityAmounts (exact integers), the
float versions the kernel uses, tick-aligned ranges per fee tier, and an env position whose
price crosses out of its tick range, against numbers worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from nexlify.config import MarketConfig, from_dict, to_dict
from nexlify.config.strategies import LiquidityConfig
from nexlify.errors import ConfigError, DataError
from nexlify.market.env import VecMarketEnv
from nexlify.market.strategies import columns as SC
from nexlify.market.strategies import tick_math as TM
from nexlify.market.strategies.uniswap_v3 import (
    amounts_for_liquidity,
    liquidity_for_amounts,
    price_at_tick,
    range_ticks,
    sqrt_price_at_tick,
    tick_at_price,
    tick_spacing,
)
from tests.helpers import FLAT, bars_market, market_config

Q96 = 2**96


def test_sqrt_ratio_at_known_ticks() -> None:
    assert TM.get_sqrt_ratio_at_tick(0) == Q96  # price 1
    assert TM.get_sqrt_ratio_at_tick(1) == 79232123823359799118286999568  # sqrt(1.0001) 2^96
    assert TM.get_sqrt_ratio_at_tick(TM.MIN_TICK) == 4295128739
    assert TM.get_sqrt_ratio_at_tick(TM.MAX_TICK) == (
        1461446703485210103287273052203988822378723970342
    )
    # sqrt(1.0001) = 1.0000499987500625; times 2^96 rounded up is the value above.
    assert TM.get_sqrt_ratio_at_tick(1) / Q96 == pytest.approx(1.0000499987500625, rel=1e-15)
    with pytest.raises(DataError, match="tick 887273 is outside"):
        TM.get_sqrt_ratio_at_tick(TM.MAX_TICK + 1)


@pytest.mark.parametrize("tick", [TM.MIN_TICK, -80_067, -60, -1, 0, 1, 60, 80_067, 887_271])
def test_tick_and_sqrt_ratio_round_trip(tick: int) -> None:
    ratio = TM.get_sqrt_ratio_at_tick(tick)
    assert TM.get_tick_at_sqrt_ratio(ratio) == tick
    if tick > TM.MIN_TICK:  # one unit below the tick's ratio belongs to the tick below
        assert TM.get_tick_at_sqrt_ratio(ratio - 1) == tick - 1
    # The float version the kernel uses agrees with the contract's integer.
    assert sqrt_price_at_tick(tick) == pytest.approx(ratio / Q96, rel=1e-11)
    if abs(tick) < 400_000:  # far ticks overflow nothing but lose float digits in the log
        assert tick_at_price(price_at_tick(tick)) == tick


@pytest.mark.parametrize(
    ("fee_tier", "spacing", "lower", "upper"),
    [
        # P = 3000, w = 0.1: P/1.1 = 2727.27 is tick 79114.53, 3300 is tick 81020.83.
        (0.0001, 1, 79114, 81021),
        (0.0005, 10, 79110, 81030),
        (0.003, 60, 79080, 81060),
        (0.01, 200, 79000, 81200),
    ],
)
def test_range_ticks_floor_the_lower_and_ceil_the_upper_bound(
    fee_tier: float, spacing: int, lower: int, upper: int
) -> None:
    assert tick_spacing(fee_tier) == spacing
    assert range_ticks(3000.0, 0.1, spacing) == (lower, upper)
    assert price_at_tick(lower) <= 3000 / 1.1 and price_at_tick(upper) >= 3300.0


def test_a_range_narrower_than_the_spacing_is_one_spacing_wide() -> None:
    # P = 1.0001^100 (tick 100), w = 0.001: ticks 89.99 .. 110.0 -> [0, 200] on the 200 grid.
    assert range_ticks(1.0001**100, 0.001, 200) == (0, 200)
    # Exactly on a grid tick both bounds still move outwards to enclose the range.
    lower, upper = range_ticks(1.0, 0.0001, 1)
    assert (lower, upper) == (-1, 1)


def test_fee_tier_must_be_a_uniswap_tier() -> None:
    with pytest.raises(ValueError, match="not a Uniswap V3 tier"):
        tick_spacing(0.002)
    with pytest.raises(ConfigError, match=r"fee_tier.*0.002.*0.0001, 0.0005, 0.003 or 0.01"):
        LiquidityConfig(fee_tier=0.002)
    assert LiquidityConfig(fee_tier=0.01).fee_tier == 0.01


# Range [-60, 60] at price 1 (tick 0): sqrt prices 1.0001^-30 and 1.0001^30, r = 1.0001^30.
R = 1.0001**30
L_INT = 10**18


@pytest.mark.parametrize(
    ("tick", "amount0", "amount1"),
    [
        # Inside at tick 0: x = L (1 - 1/r), y = L (1 - 1/r): 2.995354955910e15 each.
        (0, L_INT * (1 - 1 / R), L_INT * (1 - 1 / R)),
        # Above (tick 120): all quote, y = L (r - 1/r) = 5.999709018652e15.
        (120, 0.0, L_INT * (R - 1 / R)),
        # At the upper tick: already all quote.
        (60, 0.0, L_INT * (R - 1 / R)),
        # Below (tick -120) and at the lower tick: all base, x = L (r - 1/r).
        (-120, L_INT * (R - 1 / R), 0.0),
        (-60, L_INT * (R - 1 / R), 0.0),
    ],
)
def test_liquidity_amounts_below_inside_and_above_the_range(
    tick: int, amount0: float, amount1: float
) -> None:
    sa, sb = TM.get_sqrt_ratio_at_tick(-60), TM.get_sqrt_ratio_at_tick(60)
    x, y = TM.amounts_for_liquidity(TM.get_sqrt_ratio_at_tick(tick), sa, sb, L_INT)
    assert x == pytest.approx(amount0, rel=1e-12, abs=2)
    assert y == pytest.approx(amount1, rel=1e-12, abs=2)
    # The float kernel math at the tick prices gives the same amounts.
    fx, fy = amounts_for_liquidity(
        float(L_INT), price_at_tick(tick), price_at_tick(-60), price_at_tick(60)
    )
    assert fx == pytest.approx(x, rel=1e-11, abs=2) and fy == pytest.approx(y, rel=1e-11, abs=2)


def test_liquidity_for_amounts_takes_the_binding_token_and_rounds_down() -> None:
    sp, sa, sb = (TM.get_sqrt_ratio_at_tick(t) for t in (0, -60, 60))
    x, y = TM.amounts_for_liquidity(sp, sa, sb, L_INT)
    # Each amount was rounded down by under one unit, worth L / x = 334 units of liquidity.
    assert L_INT - 334 <= TM.liquidity_for_amounts(sp, sa, sb, x, y) < L_INT
    # Twice the quote: base binds, liquidity unchanged.
    assert TM.liquidity_for_amounts(sp, sa, sb, x, 2 * y) == TM.liquidity_for_amount0(sp, sb, x)
    # Out of range only one token counts: below, base; above, quote.
    below = TM.get_sqrt_ratio_at_tick(-120)
    assert TM.liquidity_for_amounts(below, sa, sb, x, 0) == TM.liquidity_for_amount0(sa, sb, x)
    float_l = liquidity_for_amounts(float(x), float(y), 1.0, price_at_tick(-60), price_at_tick(60))
    assert float_l == pytest.approx(L_INT, rel=1e-11)


def lp_config(**overrides: Any) -> MarketConfig:
    liquidity = {
        "range_width": 0.1,
        "fee_tier": 0.003,
        "volume_ratio": 1000.0,
        "depth_2pct_usd": 1e6,
        "gas_cost": 0.0,
        "lp_size": 0.25,
        **overrides,
    }
    values = to_dict(market_config(fee=0.0))
    values["strategies"].update(enabled=["spot", "liquidity"], liquidity=liquidity)
    return from_dict(MarketConfig, values)


def test_a_position_crossing_above_its_upper_tick_ends_all_in_quote() -> None:
    provide, rebalance = 3, 4
    bars = [FLAT] * 3 + [(105.0, 115.0, 104.0, 112.0)] + [(115.0, 115.5, 114.5, 115.0)] * 2
    env = VecMarketEnv(bars_market(bars), lp_config(), num_envs=1, autoreset=False, record=True)
    env.reset(options={"starts": [0]})
    env.step(np.array([provide]))  # 2,500 at 100: ticks 45060 .. 47040 (60-tick grid)
    pa, pb = 1.0001**45060, 1.0001**47040  # 90.538, 110.362
    assert env._ss[0, SC.LP_PA] == pytest.approx(pa, rel=1e-12)
    assert env._ss[0, SC.LP_PB] == pytest.approx(pb, rel=1e-12)
    # At 100 the position needs x = L (1/10 - 1/sqrt(pb)) base and y = L (10 - sqrt(pa)) quote:
    # 2,500 = L (100 (1/10 - 1/sqrt(pb)) + 10 - sqrt(pa)).
    liquidity = 2500.0 / (20.0 - 100.0 / math.sqrt(pb) - math.sqrt(pa))
    assert env._ss[0, SC.LP_L] == pytest.approx(liquidity, rel=1e-10)

    def fee(close: float, share_of_bar: float) -> float:  # volume 1 x close x ratio 1000 x 0.3%
        pool = 1e6 / (math.sqrt(close) * (math.sqrt(1.02) - 1.0))
        return close * 1000.0 * 0.003 * liquidity / (liquidity + pool) * share_of_bar

    env.step(np.array([0]))
    obs, *_ = env.step(np.array([0]))  # bar 3: 104 .. 115, in range up to 110.362 only
    fees = 2 * fee(100.0, 1.0) + fee(112.0, (pb - 104.0) / (115.0 - 104.0))
    assert env._ss[0, SC.LP_FEES] == pytest.approx(fees, rel=1e-10)
    all_quote = liquidity * (math.sqrt(pb) - math.sqrt(pa))  # x = 0 above the range
    assert env.account(0)["equity"] == pytest.approx(7500.0 + all_quote + fees, rel=1e-10)
    assert obs[0, -3] == 0.0  # "in range" reads 0 at a close of 112 > 110.362
    env.step(np.array([0]))  # bar 4 at 115: no fees, value unchanged (all quote)
    assert env._ss[0, SC.LP_FEES] == pytest.approx(fees, rel=1e-10)
    x0, y0 = liquidity * (0.1 - 1 / math.sqrt(pb)), liquidity * (10.0 - math.sqrt(pa))
    assert env._ss[0, SC.LP_IL] == pytest.approx(all_quote - (x0 * 115.0 + y0), rel=1e-10)
    env.step(np.array([rebalance]))  # re-centred at 115: ticks 46498.54 -> 46440, 48404.84 -> 48420
    assert env._ss[0, SC.LP_PA] == pytest.approx(1.0001**46440, rel=1e-12)
    assert env._ss[0, SC.LP_PB] == pytest.approx(1.0001**48420, rel=1e-12)
