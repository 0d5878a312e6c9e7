"""Uniswap V3's fixed-point tick and liquidity math, exact, in Python integers.

The reference the compiled float kernel is tested against: ``get_sqrt_ratio_at_tick`` is the
core contract's ``TickMath.getSqrtRatioAtTick`` (Q64.96 ``sqrt(1.0001^tick) * 2^96``, rounded
up), ``get_tick_at_sqrt_ratio`` its inverse (the greatest tick whose ratio is <= the given one),
and the ``liquidity_for_*`` / ``amount*_for_liquidity`` functions are the periphery's
``LiquidityAmounts`` library (whitepaper section 6.2; every division rounds down as ``mulDiv``
does). token0 is the pair's base, token1 its quote: price = token1 per token0 = 1.0001^tick.
Python integers do not overflow, so ``mulDiv(a, b, d)`` is ``a * b // d``.
"""

from __future__ import annotations

from nexlify.errors import DataError

MIN_TICK = -887272
MAX_TICK = 887272
Q96 = 1 << 96
MIN_SQRT_RATIO = 4295128739
"""getSqrtRatioAtTick(MIN_TICK)."""
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
"""getSqrtRatioAtTick(MAX_TICK)."""

_UINT256_MAX = (1 << 256) - 1
# sqrt(1.0001^-(2^i)) as Q128.128 for i = 1..19 (the contract's constants, bit by bit).
_BIT_FACTORS = (
    (0x2, 0xFFF97272373D413259A46990580E213A),
    (0x4, 0xFFF2E50F5F656932EF12357CF3C7FDCC),
    (0x8, 0xFFE5CACA7E10E4E61C3624EAA0941CD0),
    (0x10, 0xFFCB9843D60F6159C9DB58835C926644),
    (0x20, 0xFF973B41FA98C081472E6896DFB254C0),
    (0x40, 0xFF2EA16466C96A3843EC78B326B52861),
    (0x80, 0xFE5DEE046A99A2A811C461F1969C3053),
    (0x100, 0xFCBE86C7900A88AEDCFFC83B479AA3A4),
    (0x200, 0xF987A7253AC413176F2B074CF7815E54),
    (0x400, 0xF3392B0822B70005940C7A398E4B70F3),
    (0x800, 0xE7159475A2C29B7443B29C7FA6E889D9),
    (0x1000, 0xD097F3BDFD2022B8845AD8F792AA5825),
    (0x2000, 0xA9F746462D870FDF8A65DC1F90E061E5),
    (0x4000, 0x70D869A156D2A1B890BB3DF62BAF32F7),
    (0x8000, 0x31BE135F97D08FD981231505542FCFA6),
    (0x10000, 0x9AA508B5B7A84E1C677DE54F3E99BC9),
    (0x20000, 0x5D6AF8DEDB81196699C329225EE604),
    (0x40000, 0x2216E584F5FA1EA926041BEDFE98),
    (0x80000, 0x48A170391F7DC42444E8FA2),
)


def get_sqrt_ratio_at_tick(tick: int) -> int:
    """``sqrt(1.0001^tick) * 2^96`` as the contract computes it (Q64.96, rounded up)."""
    if not MIN_TICK <= tick <= MAX_TICK:
        raise DataError(f"uniswap tick {tick} is outside [{MIN_TICK}, {MAX_TICK}]")
    abs_tick = abs(tick)
    ratio = 0xFFFCB933BD6FAD37AA2D162D1A594001 if abs_tick & 0x1 else 1 << 128
    for bit, factor in _BIT_FACTORS:
        if abs_tick & bit:
            ratio = (ratio * factor) >> 128
    if tick > 0:
        ratio = _UINT256_MAX // ratio
    return (ratio >> 32) + (0 if ratio % (1 << 32) == 0 else 1)


def get_tick_at_sqrt_ratio(sqrt_ratio_x96: int) -> int:
    """The greatest tick whose ratio is <= ``sqrt_ratio_x96`` (``TickMath.getTickAtSqrtRatio``).

    Found by bisection over ``get_sqrt_ratio_at_tick``, which is increasing: the same answer as
    the contract's log2 approximation by that function's definition.
    """
    if not MIN_SQRT_RATIO <= sqrt_ratio_x96 < MAX_SQRT_RATIO:
        raise DataError(
            f"uniswap sqrt ratio {sqrt_ratio_x96} is outside [{MIN_SQRT_RATIO}, {MAX_SQRT_RATIO})"
        )
    lo, hi = MIN_TICK, MAX_TICK  # invariant: ratio(lo) <= x < ratio(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if get_sqrt_ratio_at_tick(mid) <= sqrt_ratio_x96:
            lo = mid
        else:
            hi = mid
    return lo


def _ordered(sqrt_a: int, sqrt_b: int) -> tuple[int, int]:
    return (sqrt_a, sqrt_b) if sqrt_a <= sqrt_b else (sqrt_b, sqrt_a)


def liquidity_for_amount0(sqrt_a: int, sqrt_b: int, amount0: int) -> int:
    """``amount0 * (sa * sb / Q96) / (sb - sa)``: liquidity that ``amount0`` of base funds."""
    sa, sb = _ordered(sqrt_a, sqrt_b)
    return amount0 * (sa * sb // Q96) // (sb - sa)


def liquidity_for_amount1(sqrt_a: int, sqrt_b: int, amount1: int) -> int:
    """``amount1 * Q96 / (sb - sa)``: liquidity that ``amount1`` of quote funds."""
    sa, sb = _ordered(sqrt_a, sqrt_b)
    return amount1 * Q96 // (sb - sa)


def liquidity_for_amounts(
    sqrt_price: int, sqrt_a: int, sqrt_b: int, amount0: int, amount1: int
) -> int:
    """Most liquidity the amounts fund at ``sqrt_price`` on the range (the binding token's)."""
    sa, sb = _ordered(sqrt_a, sqrt_b)
    if sqrt_price <= sa:
        return liquidity_for_amount0(sa, sb, amount0)
    if sqrt_price < sb:
        return min(
            liquidity_for_amount0(sqrt_price, sb, amount0),
            liquidity_for_amount1(sa, sqrt_price, amount1),
        )
    return liquidity_for_amount1(sa, sb, amount1)


def amount0_for_liquidity(sqrt_a: int, sqrt_b: int, liquidity: int) -> int:
    """Base held between the two sqrt prices: ``(L << 96) * (sb - sa) / sb / sa``."""
    sa, sb = _ordered(sqrt_a, sqrt_b)
    return (liquidity << 96) * (sb - sa) // sb // sa


def amount1_for_liquidity(sqrt_a: int, sqrt_b: int, liquidity: int) -> int:
    """Quote held between the two sqrt prices: ``L * (sb - sa) / Q96``."""
    sa, sb = _ordered(sqrt_a, sqrt_b)
    return liquidity * (sb - sa) // Q96


def amounts_for_liquidity(
    sqrt_price: int, sqrt_a: int, sqrt_b: int, liquidity: int
) -> tuple[int, int]:
    """(base, quote) of ``liquidity`` on the range at ``sqrt_price``: below, inside, above."""
    sa, sb = _ordered(sqrt_a, sqrt_b)
    if sqrt_price <= sa:
        return amount0_for_liquidity(sa, sb, liquidity), 0
    if sqrt_price < sb:
        return (
            amount0_for_liquidity(sqrt_price, sb, liquidity),
            amount1_for_liquidity(sa, sqrt_price, liquidity),
        )
    return 0, amount1_for_liquidity(sa, sb, liquidity)
