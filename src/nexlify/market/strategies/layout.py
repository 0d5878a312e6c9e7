"""How the enabled strategies extend the env: actions, observations, kernel inputs, PnL breakdown.

Actions (after ``0`` hold and, when spot is on, the ``2P`` spot actions), in this order:

- staking: ``stake ASSET`` (buy and stake up to ``stake_size`` of equity), ``unstake ASSET``
  (everything starts unbonding; sold back to cash when unbonded);
- lending: ``supply ASSET`` (up to ``supply_size`` of equity), ``withdraw ASSET`` (everything);
- liquidity: ``provide liquidity PAIR`` (a new position of up to ``lp_size`` of equity centred on
  the price), ``rebalance liquidity PAIR`` (burn and mint around the current price, two gas
  payments), ``remove liquidity PAIR``;
- arbitrage in agent mode: ``fund arbitrage book``, ``close arbitrage book``, then
  ``arbitrage PAIR`` for each pair (trade its best spread now if it beats the costs). In rule
  mode arbitrage has no actions: the book is funded on the first bar and trades every spread.

Observation, appended after the spot part: staking ``[staked share, unbonding share, APY x10,
unbonding bars left / unbonding bars]``; lending ``[supplied share, supply rate x10,
utilisation]``; liquidity ``[position share, in range, place in range (-1 low .. 1 high), IL as
% of equity]``; arbitrage ``[spread of each pair x1000 (0.1% reads 1), book share, transfer
pending]``. Every value is known at the bar's close.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from nexlify.config import MarketConfig
from nexlify.config.strategies import STAKING_DEFAULTS, StrategiesConfig
from nexlify.data.market_data import MarketData
from nexlify.market.obs_layout import spot_action_count, strategy_obs_size
from nexlify.market.strategies import columns as SC
from nexlify.market.strategies.kernel_arbitrage import arbitrage_bar_table
from nexlify.market.strategies.rates import SECONDS_PER_YEAR, epoch_growth
from nexlify.market.strategies.series import strategy_series, venue_spreads

log = logging.getLogger("nexlify.market.strategies")


@dataclass(frozen=True, eq=False)
class StrategyRuntime:
    """Everything the env needs for the enabled strategies of one market."""

    enabled: tuple[str, ...]
    """Enabled strategies (spot included when on)."""
    n_spot_actions: int
    """Spot actions after hold (2P, or 0 when spot is off)."""
    action_names: tuple[str, ...]
    """Names of the strategy actions (after hold and the spot actions)."""
    obs_size: int
    """Observation values the strategies append."""
    sp: np.ndarray
    """Kernel parameter vector float64 [N_SP]."""
    ser: np.ndarray
    """Per-bar series float64 [T, N_SER]."""
    prem: np.ndarray
    """Venue premiums float64 [T, P, V, 2]."""
    arb_bar: np.ndarray
    """What every env's arbitrage book reads per bar and pair, float64 [T, P, N_AB + V]
    (``columns``; a stand-in when arbitrage is off)."""
    notes: tuple[str, ...]
    """Where the inputs came from (SIMULATED ones say so)."""
    spreads_simulated: bool
    """Whether arbitrage runs on simulated venue spreads."""

    @property
    def has_books(self) -> bool:
        """Whether any strategy beyond spot is on (the kernel's strategy path)."""
        return any(s != "spot" for s in self.enabled)

    @property
    def slashing(self) -> bool:
        """Whether the env must draw a uniform number per env and step (slashing on)."""
        return bool(self.sp[SC.SP_ST_SLASH_P] > 0.0)


def _pair_index(pairs: tuple[str, ...], pair: str, where: str) -> int:
    if pair == "auto":
        return 0
    if pair not in pairs:
        from nexlify.errors import ConfigError

        known = ", ".join(pairs)
        raise ConfigError(f"{where}: {pair!r} is not one of the market's pairs ({known})")
    return pairs.index(pair)


def _lending_asset(st: StrategiesConfig, quote: str) -> str:
    asset = st.lending.asset
    return quote if asset.lower() == "quote" else asset


def strategy_actions(st: StrategiesConfig, pairs: tuple[str, ...]) -> dict[str, list[str]]:
    """The enabled books' action names, per book in action order (after hold and the spot
    actions), from the config and the pairs alone: ``nexlify paper status`` names a session's
    next action with them without its candles."""
    bases = tuple(p.split("/")[0] for p in pairs)
    books: dict[str, list[str]] = {}
    if st.uses("staking"):
        asset, _ = st.staking.resolved(bases)
        books["staking"] = [f"stake {asset}", f"unstake {asset}"]
    if st.uses("lending"):
        asset = _lending_asset(st, pairs[0].split("/")[1])
        books["lending"] = [f"supply {asset}", f"withdraw {asset}"]
    if st.uses("liquidity"):
        pair = pairs[_pair_index(pairs, st.liquidity.pair, "strategies.liquidity.pair")]
        books["liquidity"] = [f"provide liquidity {pair}", f"rebalance liquidity {pair}",
                              f"remove liquidity {pair}"]  # fmt: skip
    if st.uses("arbitrage") and st.arbitrage.mode == "agent":
        books["arbitrage"] = ["fund arbitrage book", "close arbitrage book",
                              *(f"arbitrage {pair}" for pair in pairs)]  # fmt: skip
    return books


def _base_index(data: MarketData, asset: str) -> int:
    bases = [p.split("/")[0].upper() for p in data.pairs]
    return bases.index(asset.upper())


def build_runtime(data: MarketData, config: MarketConfig) -> StrategyRuntime:
    """Resolve ``config.strategies`` against ``data``: actions, parameters, per-bar inputs."""
    st: StrategiesConfig = config.strategies
    P = data.n_pairs
    bar_s = float(data.bar_seconds)
    sp = np.zeros(SC.N_SP)
    for col in (SC.SP_ST_ACT, SC.SP_LD_ACT, SC.SP_LP_ACT, SC.SP_AR_ACT):
        sp[col] = -1.0
    n_spot = spot_action_count(config, P)
    sp[SC.SP_N_SPOT] = n_spot
    sp[SC.SP_TOTAL_CAP] = st.max_total_allocation
    sp[SC.SP_BAR_YEARS] = bar_s / SECONDS_PER_YEAR
    names: list[str] = []
    act: dict[str, int] = {}  # each book's first action index
    for book, book_names in strategy_actions(st, data.pairs).items():
        act[book] = 1 + n_spot + len(names)
        names += book_names
    notes: list[str] = []
    bases = tuple(p.split("/")[0] for p in data.pairs)
    quote = data.pairs[0].split("/")[1]

    if st.uses("staking"):
        asset, d = st.staking.resolved(bases)
        sp[SC.SP_ST_ON] = 1.0
        sp[SC.SP_ST_ACT] = act["staking"]
        sp[SC.SP_ST_PAIR] = _base_index(data, asset)
        sp[SC.SP_ST_SIZE] = st.staking.stake_size
        sp[SC.SP_ST_CAP] = st.staking.max_allocation
        sp[SC.SP_ST_APY] = d.apy
        sp[SC.SP_ST_GROWTH] = epoch_growth(d.apy, d.epoch_hours * 3600.0)
        sp[SC.SP_ST_EPOCH_BARS] = d.epoch_hours * 3600.0 / bar_s
        sp[SC.SP_ST_BAR_GROWTH] = (1.0 + sp[SC.SP_ST_GROWTH]) ** (1.0 / sp[SC.SP_ST_EPOCH_BARS]) - 1
        sp[SC.SP_ST_UNBOND_BARS] = math.ceil(d.unbonding_hours * 3600.0 / bar_s - 1e-9)
        sp[SC.SP_ST_SLASH_P] = min(
            st.staking.slashing_events_per_year * bar_s / SECONDS_PER_YEAR, 1.0
        )
        sp[SC.SP_ST_SLASH_FRAC] = d.slashing_fraction
        notes.append(
            f"staking {asset}: APY {d.apy:.2%}, epoch {d.epoch_hours:g} h, unbonding "
            f"{d.unbonding_hours:g} h ({d.source})"
        )
        if asset not in STAKING_DEFAULTS:
            notes.append(f"staking {asset}: configured parameters (no Nexlify defaults)")

    lending = None
    if st.uses("lending"):
        lending = st.lending
        asset = _lending_asset(st, quote)
        if asset.upper() == quote.upper():
            sp[SC.SP_LD_PAIR] = -1.0  # the quote currency: no price, no pair
        else:
            from nexlify.config import require

            require(
                asset.upper() in (b.upper() for b in bases),
                "strategies.lending",
                "asset",
                asset,
                f"quote or one of the market's assets ({', '.join((*bases, quote))})",
            )
            sp[SC.SP_LD_PAIR] = _base_index(data, asset)
        sp[SC.SP_LD_ON] = 1.0
        sp[SC.SP_LD_ACT] = act["lending"]
        sp[SC.SP_LD_SIZE] = lending.supply_size
        sp[SC.SP_LD_CAP] = lending.max_allocation

    liquidity = None
    lp_pair = 0
    if st.uses("liquidity"):
        liquidity = st.liquidity
        lp_pair = _pair_index(data.pairs, liquidity.pair, "strategies.liquidity.pair")
        sp[SC.SP_LP_ON] = 1.0
        sp[SC.SP_LP_ACT] = act["liquidity"]
        sp[SC.SP_LP_PAIR] = lp_pair
        sp[SC.SP_LP_SIZE] = liquidity.lp_size
        sp[SC.SP_LP_CAP] = liquidity.max_allocation
        sp[SC.SP_LP_WIDTH] = liquidity.range_width
        sp[SC.SP_LP_FEE_TIER] = liquidity.fee_tier
        sp[SC.SP_LP_GAS] = liquidity.gas_cost

    ser, more = strategy_series(data, lending, liquidity, lp_pair)
    notes += more
    prem = np.zeros((1, 1, 1, 2))
    arb_bar = np.zeros((1, 1, SC.N_AB + 1))
    simulated = False
    if st.uses("arbitrage"):
        ar = st.arbitrage
        spreads = venue_spreads(data, ar)
        prem = np.ascontiguousarray(spreads.premiums)
        simulated = spreads.simulated
        notes += spreads.notes
        V = prem.shape[2]
        sp[SC.SP_AR_ON] = 1.0
        sp[SC.SP_AR_RULE] = 1.0 if ar.mode == "rule" else 0.0
        sp[SC.SP_AR_SIZE] = ar.book_size
        sp[SC.SP_AR_CAP] = ar.max_allocation
        sp[SC.SP_AR_MAX_TRADE] = ar.max_trade_fraction
        sp[SC.SP_AR_MIN_EDGE] = ar.min_edge
        sp[SC.SP_AR_DELAY] = math.ceil(ar.transfer_hours * 3600.0 / bar_s - 1e-9)
        sp[SC.SP_AR_WFEE_Q] = ar.withdrawal_fee_quote
        sp[SC.SP_AR_WFEE_B] = ar.withdrawal_fee_base_usd
        sp[SC.SP_AR_REBAL] = ar.rebalance_threshold
        sp[SC.SP_AR_N_VENUES] = V
        fee = config.execution.fee_rate
        rates = ar.venue_fee_rates or (fee,) * (V - 1)
        sp[SC.SP_AR_VFEE] = fee
        for v in range(1, V):
            sp[SC.SP_AR_VFEE + v] = rates[v - 1] if v - 1 < len(rates) else fee
        if ar.mode == "agent":
            sp[SC.SP_AR_ACT] = act["arbitrage"]
        slip = config.execution.slippage_bps / 10_000.0  # as the env's params[P_SLIPPAGE]
        arb_bar = arbitrage_bar_table(data.prices, prem, sp, slip)
    return StrategyRuntime(
        enabled=st.enabled,
        n_spot_actions=n_spot,
        action_names=tuple(names),
        obs_size=strategy_obs_size(st, P),
        sp=sp,
        ser=np.ascontiguousarray(ser),
        prem=prem,
        arb_bar=arb_bar,
        notes=tuple(notes),
        spreads_simulated=simulated,
    )


def breakdown(
    ss_row: np.ndarray, start_equity: float, equity: float, runtime: StrategyRuntime
) -> dict[str, float]:
    """Per-strategy PnL (quote currency) and strategy details of one env's episode.

    ``pnl_spot`` is what the other books do not explain: spot trading's PnL.
    """
    out: dict[str, float] = {}
    total = equity - start_equity
    others = 0.0
    books = (
        ("staking", SC.S_STAKING),
        ("lending", SC.S_LENDING),
        ("liquidity", SC.S_LIQUIDITY),
        ("arbitrage", SC.S_ARBITRAGE),
    )
    for name, s in books:
        if name in runtime.enabled:
            pnl = ss_row[SC.VALUE + s] + ss_row[SC.FLOW_OUT + s] - ss_row[SC.FLOW_IN + s]
            out[f"pnl_{name}"] = float(pnl)
            others += pnl
    if "spot" in runtime.enabled:
        out["pnl_spot"] = float(total - others)
    if "staking" in runtime.enabled:
        out["staking_reward_units"] = float(ss_row[SC.ST_REWARDS])
        out["staking_slashing_events"] = float(ss_row[SC.ST_EVENTS])
    if "lending" in runtime.enabled:
        out["lending_interest_units"] = float(ss_row[SC.LD_INTEREST])
    if "liquidity" in runtime.enabled:
        out["lp_fees"] = float(ss_row[SC.LP_FEES])
        out["lp_gas"] = float(ss_row[SC.LP_GAS])
        out["lp_impermanent_loss"] = float(ss_row[SC.LP_IL])
        out["lp_rebalances"] = float(ss_row[SC.LP_REBALANCES])
        bars = ss_row[SC.LP_BARS]
        out["lp_in_range_share"] = float(ss_row[SC.LP_IN_RANGE_BARS] / bars) if bars else 0.0
    if "arbitrage" in runtime.enabled:
        out["arb_trades"] = float(ss_row[SC.AR_TRADES])
        out["arb_profit"] = float(ss_row[SC.AR_PROFIT])
        out["arb_withdrawal_fees"] = float(ss_row[SC.AR_WFEES])
        out["arb_transfers"] = float(ss_row[SC.AR_TRANSFERS])
        out["arb_spreads_simulated"] = 1.0 if runtime.spreads_simulated else 0.0
    return out
