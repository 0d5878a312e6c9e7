"""Cross-exchange spread scan over aligned candles: how often a spread beat the costs, and what
trading it would have earned.

At every bar both venues really have (no filled bars), the scan buys at the cheapest venue's open
and sells at the dearest's (the same rule the env's arbitrage book follows), paying each venue's
taker fee and the slippage on both legs. ``edge = sell (1 - slip)(1 - fee_s) / (buy (1 + slip)
(1 + fee_b)) - 1``; an opportunity is a bar with ``edge > min_edge``; trading ``notional`` of
quote into it earns ``notional x edge``. With inventory held on both venues nothing has to move
for one trade; ``earned_after_transfers`` charges one base and one quote withdrawal per trade, the
worst case of rebalancing after every trade. Hourly opens hide spreads that open and close inside
the hour, so these counts are a floor on what a live bot watching order books would see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from nexlify.data.align import VenueAlignment, align_venues
from nexlify.data.candles import find_candle_file, read_candles
from nexlify.errors import ConfigError


def round_trip_pnl(
    qty: float,
    buy_price: float,
    sell_price: float,
    buy_fee: float,
    sell_fee: float,
    slippage: float = 0.0,
) -> float:
    """PnL in quote of buying ``qty`` at ``buy_price`` on one venue and selling it at
    ``sell_price`` on another, after both taker fees and slippage (a fraction) on both legs."""
    proceeds = qty * sell_price * (1.0 - slippage) * (1.0 - sell_fee)
    cost = qty * buy_price * (1.0 + slippage) * (1.0 + buy_fee)
    return proceeds - cost


@dataclass(frozen=True)
class SpreadScan:
    """Result of scanning one pair across venues."""

    pair: str
    venues: tuple[str, ...]
    bars: int
    """Bars every venue really has (the ones scanned)."""
    opportunities: int
    """Bars whose best spread beat fees, slippage and min_edge."""
    earned: float
    """Quote earned trading ``notional`` into every opportunity."""
    earned_after_transfers: float
    """``earned`` less one base and one quote withdrawal fee per trade (worst case)."""
    notional: float
    mean_edge_bps: float
    """Mean edge of the opportunities in basis points (0 when none)."""
    max_edge_bps: float
    """Largest edge in basis points over all scanned bars (may be negative)."""
    median_abs_spread_bps: float
    """Median absolute open-price spread between the first two venues, basis points."""
    fees: tuple[float, ...]
    slippage_bps: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def best_edges(opens: np.ndarray, fees: np.ndarray, slippage: float) -> np.ndarray:
    """Best edge per bar over every ordered venue pair: opens [T, V], fees [V] -> [T]."""
    cost = opens * (1.0 + slippage) * (1.0 + fees)[None, :]
    proceeds = opens * (1.0 - slippage) * (1.0 - fees)[None, :]
    T, V = opens.shape
    best = np.full(T, -np.inf)
    for b in range(V):
        for s in range(V):
            if b != s:
                best = np.maximum(best, proceeds[:, s] / cost[:, b] - 1.0)
    return best


def scan_alignment(
    alignment: VenueAlignment,
    pair: str,
    fees: Mapping[str, float],
    *,
    slippage_bps: float = 5.0,
    notional: float = 1_000.0,
    min_edge: float = 0.0,
    withdrawal_fee_quote: float = 1.0,
    withdrawal_fee_base_usd: float = 5.0,
) -> SpreadScan:
    """Scan ``alignment`` (one pair on several venues); ``fees`` maps every venue to its fee."""
    missing = [v for v in alignment.venues if v not in fees]
    if missing:
        raise ConfigError(f"arbitrage scan: no fee given for venue(s) {', '.join(missing)}")
    if len(alignment.venues) < 2:
        raise ConfigError("arbitrage scan: needs at least two venues")
    shared = alignment.shared()
    opens = alignment.ohlcv[shared][:, :, 0]
    fee_arr = np.array([fees[v] for v in alignment.venues])
    slip = slippage_bps / 10_000.0
    edges = best_edges(opens, fee_arr, slip)
    hits = edges > min_edge
    earned = float(notional * edges[hits].sum())
    transfers = int(hits.sum()) * (withdrawal_fee_quote + withdrawal_fee_base_usd)
    spread = np.abs(opens[:, 1] / opens[:, 0] - 1.0) if len(opens) else np.zeros(0)
    return SpreadScan(
        pair=pair,
        venues=alignment.venues,
        bars=len(opens),
        opportunities=int(hits.sum()),
        earned=earned,
        earned_after_transfers=earned - transfers,
        notional=notional,
        mean_edge_bps=float(edges[hits].mean() * 1e4) if hits.any() else 0.0,
        max_edge_bps=float(edges.max() * 1e4) if len(edges) else 0.0,
        median_abs_spread_bps=float(np.median(spread) * 1e4) if len(spread) else 0.0,
        fees=tuple(float(f) for f in fee_arr),
        slippage_bps=slippage_bps,
    )


def load_alignment(folders: Mapping[str, str], pair: str, timeframe: str) -> VenueAlignment:
    """One pair's candles from each venue folder, aligned on a common grid."""
    frames = {
        venue: read_candles(find_candle_file(folder, pair, timeframe), timeframe)
        for venue, folder in folders.items()
    }
    return align_venues(frames, timeframe)
