"""Strategies beyond spot trading, simulated inside the same env: staking, lending (Aave-style),
Uniswap V3 liquidity and cross-exchange arbitrage.

- :mod:`nexlify.config.strategies`: typed settings and the documented defaults (ETH, SOL staking);
- :mod:`.rates`: the kinked interest-rate curve and staking epoch growth;
- :mod:`.uniswap_v3`: concentrated-liquidity math (whitepaper formulas);
- :mod:`.series`: per-bar inputs (utilisation, pool volume and depth, venue
  spreads) from config, CSV files, other venues' candles or a seeded simulation;
- :mod:`.kernel`: the compiled per-env strategy step the env runs before each
  spot step, dispatching to one module per book (``kernel_staking``, ``kernel_lending``,
  ``kernel_liquidity``, ``kernel_arbitrage``; shared money moves in ``kernel_book``; array
  columns in ``columns``);
- :mod:`.layout`: actions, observations and arrays the env builds from config;
- :mod:`.arbitrage`: offline spread scan over aligned venues (real candles).
"""

from __future__ import annotations

from nexlify.config.strategies import STRATEGIES

__all__ = ["APPROXIMATIONS", "PNL_PREFIX", "STRATEGIES", "strategy_pnl"]

APPROXIMATIONS = (
    "pool price = the pair's candle price; the tick grid is laid on that price (token decimals "
    "taken as equal)",
    "LP fee income uses the share of the bar's high-low range inside the position's range",
    "lending withdrawals always succeed (pool liquidity is assumed ample for our size)",
    "staking rewards start at once (no activation queue); unstaking earns nothing",
    "at an episode's end staked and unbonding funds are sold at the close (as a liquid-staking "
    "token would be)",
    "arbitrage legs fill at both venues' bar opens; inventory on each venue carries price risk",
)
"""Modelling approximations, repeated in reports next to the per-strategy breakdown."""

PNL_PREFIX = "avg_pnl_"
"""Summary metrics that hold a strategy's average PnL per validation window (quote currency)."""


def strategy_pnl(metrics: dict[str, float]) -> dict[str, float]:
    """{strategy: average PnL} from a summary's metrics dict (empty for spot-only runs)."""
    return {k[len(PNL_PREFIX) :]: v for k, v in metrics.items() if k.startswith(PNL_PREFIX)}
