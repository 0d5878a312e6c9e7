"""Uniswap V3 concentrated-liquidity math (whitepaper, section 6.2-6.3) on the tick grid.

A position of liquidity ``L`` on ``[Pa, Pb]`` holds, at pool price ``P`` (quote per base):

- ``P <= Pa`` (below the range): ``x = L (1/sqrt(Pa) - 1/sqrt(Pb))``, ``y = 0`` (all base);
- ``Pa < P < Pb``: ``x = L (1/sqrt(P) - 1/sqrt(Pb))``, ``y = L (sqrt(P) - sqrt(Pa))``;
- ``P >= Pb`` (above): ``x = 0``, ``y = L (sqrt(Pb) - sqrt(Pa))`` (all quote).

Liquidity from amounts takes the smaller of ``x sqrt(P) sqrt(Pb) / (sqrt(Pb) - sqrt(P))`` and
``y / (sqrt(P) - sqrt(Pa))`` (the binding token). Fees go to in-range liquidity pro rata:
a position's share of a swap's fee is ``L / (L + L_pool)``.

Range bounds sit on ticks, as real positions do: ``price(tick) = 1.0001^tick`` with ticks a
multiple of the fee tier's spacing (0.01% -> 1, 0.05% -> 10, 0.3% -> 60, 1% -> 200); the lower
bound is floored and the upper one ceiled to that grid (:func:`range_ticks`). These are the
contract's formulas in floating point; :mod:`nexlify.market.strategies.tick_math` holds the exact
Q64.96 integer versions they are tested against. The grid is laid on the quoted price (token
decimals taken as equal), which can shift it against a real pool's grid by less than a spacing.
"""

from __future__ import annotations

import math

from numba import njit

from nexlify.config.strategies import FEE_TIERS

LOG_TICK_BASE = math.log(1.0001)
"""ln(1.0001): one tick is a 0.01% price step."""
TICK_SPACINGS = (1, 10, 60, 200)
"""Tick spacing of each fee tier in ``FEE_TIERS``."""
MIN_TICK, MAX_TICK = -887272, 887272


@njit(cache=True)
def tick_spacing(fee_tier: float) -> int:
    """The tick spacing of a fee tier (ValueError for a fee that is not a Uniswap V3 tier)."""
    for i in range(len(FEE_TIERS)):
        if abs(fee_tier - FEE_TIERS[i]) < 1e-12:
            return TICK_SPACINGS[i]
    raise ValueError("fee tier is not a Uniswap V3 tier (0.0001, 0.0005, 0.003, 0.01)")


@njit(cache=True)
def price_at_tick(tick: int) -> float:
    """``1.0001^tick``."""
    return math.exp(tick * LOG_TICK_BASE)


@njit(cache=True)
def sqrt_price_at_tick(tick: int) -> float:
    """``sqrt(1.0001^tick)``: the contract's sqrtPriceX96 divided by 2^96."""
    return math.exp(0.5 * tick * LOG_TICK_BASE)


@njit(cache=True)
def tick_at_price(price: float) -> int:
    """The greatest tick whose price is <= ``price``."""
    tick = math.floor(math.log(price) / LOG_TICK_BASE)
    if price_at_tick(tick + 1) <= price:  # the log's rounding can land one tick off
        return tick + 1
    if price_at_tick(tick) > price:
        return tick - 1
    return tick


@njit(cache=True)
def range_ticks(price: float, width: float, spacing: int) -> tuple[int, int]:
    """(lower, upper) ticks of a range around ``price``: ``P / (1 + w)`` floored and
    ``P (1 + w)`` ceiled to multiples of ``spacing``, at least one spacing apart."""
    lower = (tick_at_price(price / (1.0 + width)) // spacing) * spacing
    high = price * (1.0 + width)
    top = tick_at_price(high)
    if price_at_tick(top) < high:  # ceil: the least tick at or above the bound
        top += 1
    upper = -(-top // spacing) * spacing
    lower = max(lower, -(-MIN_TICK // spacing) * spacing)
    upper = min(upper, (MAX_TICK // spacing) * spacing)
    if upper - lower < spacing:
        upper = lower + spacing
    return lower, upper


@njit(cache=True)
def amounts_for_liquidity(
    liquidity: float, price: float, price_a: float, price_b: float
) -> tuple[float, float]:
    """(base amount x, quote amount y) of a position of ``liquidity`` on ``[price_a, price_b]``."""
    sa, sb = math.sqrt(price_a), math.sqrt(price_b)
    if price <= price_a:
        return liquidity * (1.0 / sa - 1.0 / sb), 0.0
    if price >= price_b:
        return 0.0, liquidity * (sb - sa)
    sp = math.sqrt(price)
    return liquidity * (1.0 / sp - 1.0 / sb), liquidity * (sp - sa)


@njit(cache=True)
def liquidity_for_amounts(
    x: float, y: float, price: float, price_a: float, price_b: float
) -> float:
    """Largest liquidity that base ``x`` and quote ``y`` can fund on ``[price_a, price_b]``."""
    sa, sb = math.sqrt(price_a), math.sqrt(price_b)
    if price <= price_a:
        return x / (1.0 / sa - 1.0 / sb)
    if price >= price_b:
        return y / (sb - sa)
    sp = math.sqrt(price)
    lx = x * sp * sb / (sb - sp)
    ly = y / (sp - sa)
    return min(lx, ly)


@njit(cache=True)
def unit_amounts(price: float, price_a: float, price_b: float) -> tuple[float, float]:
    """(x, y) per unit of liquidity: the token mix a new position at ``price`` needs."""
    return amounts_for_liquidity(1.0, price, price_a, price_b)


@njit(cache=True)
def position_value(liquidity: float, price: float, price_a: float, price_b: float) -> float:
    """Value in quote currency at ``price``: ``x * price + y`` (fees not included)."""
    x, y = amounts_for_liquidity(liquidity, price, price_a, price_b)
    return x * price + y


@njit(cache=True)
def impermanent_loss(
    liquidity: float, price: float, price_a: float, price_b: float, x0: float, y0: float
) -> float:
    """Position value minus the value of just holding the opening amounts ``(x0, y0)``, at
    ``price``, in quote currency (<= 0 for a position opened with exactly those amounts)."""
    return position_value(liquidity, price, price_a, price_b) - (x0 * price + y0)


@njit(cache=True)
def fee_share(liquidity: float, pool_liquidity: float) -> float:
    """The position's share of the fees of in-range swaps: ``L / (L + L_pool)``."""
    total = liquidity + pool_liquidity
    return liquidity / total if total > 0.0 else 0.0


@njit(cache=True)
def pool_liquidity_from_depth(depth_2pct: float, price: float) -> float:
    """Active liquidity ``L`` of a pool that needs ``depth_2pct`` quote to move ``price`` up 2%.

    Buying base from ``P`` to ``P'`` takes ``L (sqrt(P') - sqrt(P))`` quote, so
    ``L = depth / (sqrt(P) (sqrt(1.02) - 1))``.
    """
    return depth_2pct / (math.sqrt(price) * (math.sqrt(1.02) - 1.0))


@njit(cache=True)
def in_range_fraction(low: float, high: float, price_a: float, price_b: float) -> float:
    """Share of a bar's [low, high] inside [price_a, price_b]: the approximate share of the bar's
    volume that traded while the position was in range (1 or 0 for a bar with no range)."""
    if high <= low:
        return 1.0 if price_a <= low <= price_b else 0.0
    overlap = min(high, price_b) - max(low, price_a)
    return max(overlap, 0.0) / (high - low)
