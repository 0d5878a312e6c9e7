"""Interest and yield math: the Aave kinked rate curve and staking growth per epoch.

Rates are yearly fractions. Compiled with numba so the market kernel can call them; they work the
same from Python (tests use them directly).
"""

from __future__ import annotations

from numba import njit

SECONDS_PER_YEAR = 365.0 * 86_400.0


@njit(cache=True)
def borrow_rate(
    utilization: float, base: float, slope1: float, slope2: float, optimal: float
) -> float:
    """Variable borrow rate of Aave's ``DefaultReserveInterestRateStrategy``.

    ``U <= U_opt``: ``base + slope1 * U / U_opt``; above the kink:
    ``base + slope1 + slope2 * (U - U_opt) / (1 - U_opt)``. ``U`` is clipped to [0, 1].
    """
    u = min(max(utilization, 0.0), 1.0)
    if u <= optimal:
        return base + slope1 * u / optimal
    return base + slope1 + slope2 * (u - optimal) / (1.0 - optimal)


@njit(cache=True)
def supply_rate(
    utilization: float,
    base: float,
    slope1: float,
    slope2: float,
    optimal: float,
    reserve_factor: float,
) -> float:
    """Supply (liquidity) rate: borrow rate x utilisation x (1 - reserve factor).

    Suppliers share the interest borrowers pay on the borrowed part of the pool, less the
    protocol's reserve factor (Aave V3 with variable debt only).
    """
    u = min(max(utilization, 0.0), 1.0)
    return borrow_rate(u, base, slope1, slope2, optimal) * u * (1.0 - reserve_factor)


@njit(cache=True)
def epoch_growth(apy: float, epoch_seconds: float) -> float:
    """Growth of a stake over one epoch so that compounding every epoch gives ``apy`` a year."""
    return (1.0 + apy) ** (epoch_seconds / SECONDS_PER_YEAR) - 1.0
