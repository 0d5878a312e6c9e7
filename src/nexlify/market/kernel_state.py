"""What the compiled step kernels read and write, grouped, and how one loop is built twice.

The kernels (:mod:`nexlify.market.kernels`, :mod:`nexlify.market.strategies.kernel`) take a few
structures instead of two dozen positional arrays: the market's tables, the spot books of every
env, the step's outputs and (with strategies on) the strategy books. Each is declared here as a
``NamedTuple`` (its fields documented) and reaches the kernels as a plain tuple (``tuple(...)``),
read by the field positions below (``books[B_ACCT]``): numba types a NamedTuple argument in Python
at every call (about 1 us per structure, a tenth of a one-env step), and it drops writes made
through a NamedTuple's fields inside a ``prange`` body (numba issue #7135); a plain tuple read
at a constant position costs nothing. The env builds the tuples once (again only when its
arrays are replaced), so a step only adds the per-step arrays.

``serial_and_parallel`` compiles one loop over envs twice from the same Python function: with
``parallel=True`` its ``prange`` spreads envs over numba's threads; without, numba runs ``prange``
as ``range`` (one thread, no barrier: cheaper for small batches).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import njit


class MarketTables(NamedTuple):
    """Per-bar tables of the market, the same for every env (read only)."""

    day: np.ndarray
    """int64 [T]: UTC day of every bar (the daily loss limit's clock)."""
    features: np.ndarray
    """float32 [T, P, F]: features known at each bar's close."""
    prices: np.ndarray
    """float32 [T, P, 4]: open, high, low, close."""
    window: int
    """Bars of features in an observation."""


class SpotBooks(NamedTuple):
    """Per-env state of the spot account (``kernels`` names the columns)."""

    cursor: np.ndarray
    """int64 [N, 3]: current, last and first bar of the episode."""
    acct: np.ndarray
    """float64 [N, N_ACCT]: cash, equity, risk state and running statistics."""
    pos: np.ndarray
    """float64 [N, P, N_POS]: open position per pair."""
    kelly_hist: np.ndarray
    """float64 [N, kelly_window]: returns of the latest closed trades (ring buffer)."""
    trade_log: np.ndarray
    """float64 [N, M, N_TRADE]: closed trades (record mode; one unused row otherwise)."""
    trade_count: np.ndarray
    """int64 [N]: trades closed this episode (record mode)."""
    equity_curve: np.ndarray
    """float64 [N, L]: equity after each step (record mode; one unused column otherwise)."""
    params: np.ndarray
    """float64 [N_PARAMS]: the risk, execution and episode rules (``kernels.P_*``)."""


M_DAY, M_FEATURES, M_PRICES, M_WINDOW = range(4)
"""Positions of ``MarketTables``' fields."""
B_CURSOR, B_ACCT, B_POS, B_KELLY_HIST, B_TRADE_LOG, B_TRADE_COUNT, B_EQUITY_CURVE, B_PARAMS = range(
    8
)
"""Positions of ``SpotBooks``' fields."""


class StepOutputs(NamedTuple):
    """What one step writes for every env."""

    obs: np.ndarray
    """float32 [N, obs_size]: observation at the new bar."""
    rewards: np.ndarray
    """float64 [N]: change of log equity over the step."""
    terminated: np.ndarray
    """bool [N]: the account was ruined."""
    truncated: np.ndarray
    """bool [N]: the episode reached its last bar."""


O_OBS, O_REWARDS, O_TERMINATED, O_TRUNCATED = range(4)
"""Positions of ``StepOutputs``' fields."""


class StrategyBooks(NamedTuple):
    """Per-env strategy books and the strategies' per-bar inputs (``strategies.columns``)."""

    sp: np.ndarray
    """float64 [N_SP]: the strategies' parameters."""
    ss: np.ndarray
    """float64 [N, N_SS]: every book's state, flows and value."""
    inv: np.ndarray
    """float64 [N, P, V, N_INV]: arbitrage inventory per pair and venue."""
    held: np.ndarray
    """float64 [N, P, V, N_HELD]: the inventory's holdings incl. transit (kept at events)."""
    eta: np.ndarray
    """float64 [N, P]: bar an arbitrage transfer arrives (-1: none)."""
    ser: np.ndarray
    """float64 [T, N_SER]: per-bar series (supply rate, utilisation, pool volume...)."""
    prem: np.ndarray
    """float64 [T, P, V, 2]: venue premiums at the open and close."""
    arb_bar: np.ndarray
    """float64 [T, P, N_AB + V]: per-bar arbitrage edge, spread and venue prices."""
    rand: np.ndarray
    """float64 [N]: this step's uniform draw per env (slashing)."""
    offset: int
    """Where the strategy part of the observation starts."""


SB_SP, SB_SS, SB_INV, SB_HELD, SB_ETA, SB_SER, SB_PREM, SB_ARB_BAR, SB_RAND, SB_OFFSET = range(10)
"""Positions of ``StrategyBooks``' fields."""


# The structures as the kernels receive them (plain tuples; the names say which one).
MarketArg = tuple[Any, ...]
SpotArg = tuple[Any, ...]
OutputsArg = tuple[Any, ...]
StrategyArg = tuple[Any, ...]


def serial_and_parallel(
    loop: Callable[..., None], name: str, doc: str, **options: Any
) -> tuple[Any, Any]:
    """``(name, name + "_serial")``: ``loop`` compiled with and without ``parallel``.

    Each is compiled from a copy of ``loop`` under its own name, because numba's cache files
    are named after the function and their key omits the compile flags: two dispatchers of one
    function would load each other's variant."""
    built = []
    for suffix, parallel in (("", True), ("_serial", False)):
        code = loop.__code__
        copy = types.FunctionType(code, loop.__globals__, name + suffix, loop.__defaults__)
        copy.__qualname__ = name + suffix
        copy.__module__ = loop.__module__
        copy.__doc__ = doc + (" Envs spread over numba's threads." if parallel else " One thread.")
        built.append(njit(cache=True, parallel=parallel, **options)(copy))
    return built[0], built[1]
