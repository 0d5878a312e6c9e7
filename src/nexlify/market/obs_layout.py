"""The env's observation and action layout, from the config alone.

The env sizes its observations with these functions, and pre-flight sizes the replay buffers
with them before any data is loaded, so the two cannot drift apart (pre-flight once restated
the spot formula and missed the strategy observations). Light on purpose: no numba, no data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from nexlify.market.strategies import columns as SC

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from nexlify.config import MarketConfig
    from nexlify.config.strategies import StrategiesConfig

PAIR_STATE = 3  # in_position, unrealised PnL (x10), time in trade (weeks of bars / 168, capped)
GLOBAL_STATE = 4  # cash share, episode log-return (x10), daily-loss lock, open-trade share

IntOrArray = TypeVar("IntOrArray", int, "npt.NDArray[np.int64]")


def spot_obs_size(obs_window: int, n_pairs: int, n_features: int) -> int:
    """Features of the last ``obs_window`` bars per pair, per-pair and global account state."""
    return obs_window * n_pairs * n_features + n_pairs * PAIR_STATE + GLOBAL_STATE


def strategy_obs_size(strategies: StrategiesConfig, n_pairs: int) -> int:
    """Observations the enabled strategy books add (0 with spot only)."""
    size = 0
    if strategies.uses("staking"):
        size += SC.OBS_STAKING
    if strategies.uses("lending"):
        size += SC.OBS_LENDING
    if strategies.uses("liquidity"):
        size += SC.OBS_LIQUIDITY
    if strategies.uses("arbitrage"):
        size += n_pairs + SC.OBS_ARB_EXTRA  # one venue spread per pair, plus the book's state
    return size


def observation_size(market: MarketConfig, n_pairs: int, n_features: int) -> int:
    """``VecMarketEnv.obs_size`` for ``market`` over data with ``n_pairs`` pairs and
    ``n_features`` features per pair and bar."""
    spot = spot_obs_size(market.env.obs_window, n_pairs, n_features)
    return spot + strategy_obs_size(market.strategies, n_pairs)


def spot_action_count(market: MarketConfig, n_pairs: int) -> int:
    """How many spot actions follow hold (buy and sell per pair; none with spot off). The
    strategy books' actions, when enabled, come after them."""
    return 2 * n_pairs if market.strategies.uses("spot") else 0


def spot_action(pair: IntOrArray, buy: bool) -> IntOrArray:
    """The spot action that buys (``1 + 2p``) or sells (``2 + 2p``) pair ``p``; the inverse of
    :func:`spot_order`, elementwise for an array of pair indices."""
    return 1 + 2 * pair + (0 if buy else 1)


def spot_order(action: int, n_spot_actions: int) -> tuple[int, bool] | None:
    """The pair index and side (True = buy) of a spot action: 0 holds, ``1 + 2p`` buys pair
    ``p`` and ``2 + 2p`` sells it. None for hold and for the strategy books' actions."""
    if not 1 <= action <= n_spot_actions:
        return None
    return (action - 1) // 2, action % 2 == 1
