"""Uniswap V3 concentrated-liquidity math (whitepaper, section 6.2-6.3), in prices, not ticks.

A position of liquidity ``L`` on ``[Pa, Pb]`` holds, at pool price ``P`` (quote per base):

- ``P <= Pa`` (below the range): ``x = L (1/sqrt(Pa) - 1/sqrt(Pb))``, ``y = 0`` (all base);
- ``Pa < P < Pb``: ``x = L (1/sqrt(P) - 1/sqrt(Pb))``, ``y = L (sqrt(P) - sqrt(Pa))``;
- ``P >= Pb`` (above): ``x = 0``, ``y = L (sqrt(Pb) - sqrt(Pa))`` (all quote).

Liquidity from amounts takes the smaller of ``x sqrt(P) sqrt(Pb) / (sqrt(Pb) - sqrt(P))`` and
``y / (sqrt(P) - sqrt(Pa))`` (the binding token). Fees go to in-range liquidity pro rata:
a position's share of a swap's fee is ``L / (L + L_pool)``. Ticks (1.0001^i price steps) are not
modelled: ranges are continuous, which moves amounts by at most 0.01% against the tick grid.
"""

from __future__ import annotations

import math

from numba import njit


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
