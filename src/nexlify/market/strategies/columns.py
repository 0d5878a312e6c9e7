"""Column indices of the strategy kernels' arrays (all float64).

- ``sp[N_SP]``: the strategy parameter vector (one per market, built by ``layout``);
- ``ss[N, N_SS]``: per-env strategy state (the books);
- ``inv[N, P, V, N_INV]``: arbitrage inventory per pair and venue; ``eta[N, P]`` the bar a
  pending transfer arrives (-1 when none);
- ``held[N, P, V, N_HELD]``: what ``inv`` holds per pair and venue, in transit included (base,
  quote), kept by the kernels whenever ``inv`` changes: all the arbitrage mark reads each bar;
- ``ser[T, N_SER]``: per-bar series (lending rate, utilisation, pool volume and depth);
- ``prem[T, P, V, 2]``: venue premiums over the primary venue (NaN = the venue has no bar);
- ``arb_bar[T, P, N_AB + V]``: what every env's arbitrage book reads at a bar, computed once per
  market from ``prem`` (``kernel_arbitrage.arbitrage_bar_table``).

The kernels in ``kernel_*.py`` index these arrays by name. Numba caches a compiled kernel by its
own file only: after changing a value here, clear ``src/nexlify/strategies/__pycache__``.
"""

from __future__ import annotations

# --- strategy parameter vector sp[N_SP] -------------------------------------------------------
SP_N_SPOT = 0  # spot actions after hold (2P, or 0 when spot is off)
SP_ST_ON, SP_LD_ON, SP_LP_ON, SP_AR_ON = 1, 2, 3, 4
SP_ST_ACT, SP_LD_ACT, SP_LP_ACT, SP_AR_ACT = 5, 6, 7, 8  # first action index of each (or -1)
SP_TOTAL_CAP, SP_BAR_YEARS = 9, 10
SP_ST_PAIR, SP_ST_SIZE, SP_ST_CAP, SP_ST_GROWTH, SP_ST_EPOCH_BARS = 11, 12, 13, 14, 15
SP_ST_UNBOND_BARS, SP_ST_SLASH_P, SP_ST_SLASH_FRAC, SP_ST_APY = 16, 17, 18, 19
SP_LD_PAIR, SP_LD_SIZE, SP_LD_CAP = 20, 21, 22
SP_LP_PAIR, SP_LP_SIZE, SP_LP_CAP, SP_LP_WIDTH, SP_LP_FEE_TIER, SP_LP_GAS = 23, 24, 25, 26, 27, 28
SP_AR_RULE, SP_AR_SIZE, SP_AR_CAP, SP_AR_MAX_TRADE, SP_AR_MIN_EDGE = 29, 30, 31, 32, 33
SP_AR_DELAY, SP_AR_WFEE_Q, SP_AR_WFEE_B, SP_AR_REBAL, SP_AR_N_VENUES = 34, 35, 36, 37, 38
SP_AR_VFEE = 39  # venue v's taker fee at SP_AR_VFEE + v (v = 0 is the primary venue)
MAX_VENUES = 4
SP_ST_BAR_GROWTH = SP_AR_VFEE + MAX_VENUES  # (1 + epoch growth) ** (epochs per bar) - 1
N_SP = SP_ST_BAR_GROWTH + 1

# --- per-env strategy state ss[N, N_SS] -------------------------------------------------------
ST_QTY, ST_ACCRUED, ST_CLOCK, ST_UNBOND_QTY, ST_UNBOND_AT, ST_REWARDS, ST_SLASHED = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
)
LD_BAL, LD_INTEREST = 7, 8
LP_L, LP_PA, LP_PB, LP_X0, LP_Y0, LP_FEES_OPEN, LP_FEES, LP_GAS = 9, 10, 11, 12, 13, 14, 15, 16
LP_IN_RANGE_BARS, LP_REBALANCES, LP_IL = 17, 18, 19
AR_FUNDED, AR_TRADES, AR_PROFIT, AR_WFEES, AR_TRANSFERS = 20, 21, 22, 23, 24
FLOW_IN, FLOW_OUT, VALUE = 25, 29, 33  # + strategy index (S_*)
ST_EVENTS, LP_BARS = 37, 38
N_SS = 39

S_STAKING, S_LENDING, S_LIQUIDITY, S_ARBITRAGE = 0, 1, 2, 3
N_STRATEGIES = 4

# --- arbitrage inventory inv[N, P, V, N_INV] --------------------------------------------------
INV_BASE, INV_QUOTE, INV_BASE_TRANSIT, INV_QUOTE_TRANSIT = 0, 1, 2, 3
N_INV = 4

# --- arbitrage holdings held[N, P, V, N_HELD] (sums of inv's columns) -------------------------
HELD_BASE, HELD_QUOTE = 0, 1  # INV_BASE + INV_BASE_TRANSIT, INV_QUOTE + INV_QUOTE_TRANSIT
N_HELD = 2

# --- per-bar series ser[T, N_SER]; venue premiums prem[T, P, V, 2] ----------------------------
SER_SUPPLY_RATE, SER_UTIL, SER_POOL_VOLUME, SER_POOL_L = 0, 1, 2, 3
N_SER = 4
PREM_OPEN, PREM_CLOSE = 0, 1

# --- per-bar arbitrage table arb_bar[T, P, N_AB + V] ------------------------------------------
AB_EDGE = 0  # best buy-here-sell-there return at the open after fees and slippage (-1: none)
AB_SPREAD_OBS = 1  # the pair's close spread as observed: (max - min premium) x 1000, clipped
AB_CLOSE = 2  # venue v's close price at AB_CLOSE + v (the primary's where the venue has no bar)
N_AB = AB_CLOSE

# --- observation ------------------------------------------------------------------------------
OBS_STAKING, OBS_LENDING, OBS_LIQUIDITY = 4, 3, 4
OBS_ARB_EXTRA = 2  # plus one spread per pair
OBS_CLIP = 5.0
DUST = 1e-9
