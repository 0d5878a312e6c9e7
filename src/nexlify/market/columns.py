"""Column indices of the market kernel's per-env account array ``acct[N, N_ACCT]`` (float64).

Shared by the spot kernel (``kernels``) and the strategy kernel (``strategies.kernel``).
"""

from __future__ import annotations

CASH, EQUITY, DAY_START_EQ, LOCKED, START_EQ = 0, 1, 2, 3, 4
FEES, N_TRADES, N_WINS, GROSS_PROFIT, GROSS_LOSS = 5, 6, 7, 8, 9
PEAK_EQ, MAX_DD, RET_SUM, RET_SQ, DOWN_SQ = 10, 11, 12, 13, 14
STEPS, EXPOSED_STEPS, N_BLOCKED, N_LIMIT_HITS, N_OPEN = 15, 16, 17, 18, 19
LOG_RETURN = 20
STRATEGY_VALUE = 21
"""Value at the last close of every strategy book beyond spot (0 with spot only)."""
N_ACCT = 22
