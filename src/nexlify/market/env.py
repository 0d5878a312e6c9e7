"""``VecMarketEnv``: N trading envs stepping at once over windows of a ``MarketData``.

Actions (per env, ``Discrete(1 + 2P)`` for P pairs): ``0`` hold, ``1 + 2i`` buy pair i (open a long
position if flat), ``2 + 2i`` sell pair i (close its position). Spot only: no shorting.

Observation (float32, per env): the market features of the last ``obs_window`` bars for every pair
(``[W, P, F]`` flattened), then per pair ``[in_position, unrealised PnL x10, time in trade]``, then
``[cash share, episode log-return x10, daily-loss lock, open trades / max]``. Account values are
clipped to [-5, 5]; the observation space's bound is 5 or the largest feature magnitude.

Decisions: with ``env.decision_interval`` K > 1 a ``step`` runs K bars, the action on the first
and hold on the rest (stops act on every bar), and returns the K bars' summed reward; an episode
ending inside the interval ends the step there.

Autoreset: in ``same_step`` mode (the default, for training) a finished env starts its next episode
within the same ``step`` call; its last observation is in ``infos["final_obs"]`` (rows marked by
``infos["_final_obs"]``) and its episode statistics in ``infos["episode"]``. With
``autoreset=False`` a finished env stays frozen (its actions are ignored, its reward is 0) until
``reset``; stepping when every env has finished is an error (evaluation).

Strategies beyond spot (``MarketConfig.strategies``: staking, lending, Uniswap V3 liquidity,
arbitrage) extend the action space after the spot actions and the observation after the account
state (see :mod:`nexlify.market.strategies.layout`); ``strategy_breakdown`` splits an
episode's PnL by strategy. With spot only (the default) nothing changes.

The step itself is one compiled kernel (``kernels.step_envs``) over preallocated arrays, passed
grouped (:mod:`nexlify.market.kernel_state`). With
``copy_obs=False`` (training loops, benchmarks) nothing is copied: the observation array returned
by a call stays valid through the next call, and ``infos["final_obs"]`` until the next call.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from typing import Any

import numba
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from nexlify.config import MarketConfig, bars_per_year
from nexlify.config.strategies import StrategiesConfig
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError, DataError
from nexlify.market import kernels as K
from nexlify.market.columns import N_ACCT
from nexlify.market.kernel_state import MarketTables, SpotBooks, StepOutputs, StrategyBooks
from nexlify.market.metrics import EpisodeMetrics
from nexlify.market.obs_layout import spot_obs_size
from nexlify.market.strategies import columns as SC
from nexlify.market.strategies import kernel as SK
from nexlify.market.strategies.layout import (
    StrategyRuntime,
    breakdown,
    build_runtime,
    strategy_actions,
)

log = logging.getLogger("nexlify.market")

PARALLEL_MIN_ENVS = 1024
"""Batches at least this large step on all of numba's threads; smaller ones on one thread,
where a thread barrier would cost more than it saves."""


def action_names(
    pairs: tuple[str, ...] | list[str], strategies: StrategiesConfig | None = None
) -> list[str]:
    """Human-readable names of the discrete actions, in index order, from the pairs and the
    strategies config alone (spot only when None)."""
    names = ["hold"]
    if strategies is None or strategies.uses("spot"):
        for pair in pairs:
            names += [f"buy {pair}", f"sell {pair}"]
    if strategies is not None:
        names += [n for book in strategy_actions(strategies, tuple(pairs)).values() for n in book]
    return names


def _say_once(level: int, note: str) -> None:
    """Log a note about the strategies' inputs once per process and shape of message (envs are
    rebuilt every training round, on markets that differ only in their numbers)."""
    unsaid = _unsaid(re.sub(r"\d[\d:.,/ -]*", "#", note))
    if unsaid:
        unsaid.pop()
        log.log(level, "%s", note)


@functools.lru_cache(maxsize=256)
def _unsaid(shape: str) -> list[bool]:
    return [True]


def _pack_params(config: MarketConfig, record: bool) -> np.ndarray:
    r, x, e = config.risk, config.execution, config.env
    params = np.zeros(K.N_PARAMS, dtype=np.float64)
    params[K.P_STOP_LOSS] = r.stop_loss
    params[K.P_TAKE_PROFIT] = r.take_profit
    params[K.P_TRAILING] = r.trailing_stop
    params[K.P_MAX_POSITION] = r.max_position
    params[K.P_MAX_CONCURRENT] = r.max_concurrent_trades
    params[K.P_DAILY_LIMIT] = r.daily_loss_limit
    params[K.P_CLOSE_ON_LIMIT] = float(r.close_on_daily_limit)
    params[K.P_USE_KELLY] = float(r.use_kelly)
    params[K.P_KELLY_FRACTION] = r.kelly_fraction
    params[K.P_KELLY_MIN_TRADES] = r.kelly_min_trades
    params[K.P_KELLY_MIN_FRACTION] = r.kelly_min_fraction
    params[K.P_FEE] = x.fee_rate
    params[K.P_SLIPPAGE] = x.slippage_bps / 10_000.0
    params[K.P_INITIAL] = x.initial_balance
    params[K.P_RUIN] = e.ruin_equity
    params[K.P_CLOSE_AT_END] = float(e.close_at_end)
    params[K.P_RECORD] = float(record)
    params[K.P_TURNOVER_PENALTY] = e.turnover_penalty
    params[K.P_MIN_HOLD] = e.min_hold_bars
    return params


class VecMarketEnv(VectorEnv):
    """Batched trading simulator; see the module docstring for actions, observations, autoreset."""

    def __init__(
        self,
        data: MarketData,
        config: MarketConfig | None = None,
        num_envs: int = 1,
        seed: int | None = None,
        *,
        autoreset: bool = True,
        record: bool = False,
        copy_obs: bool = True,
    ) -> None:
        config = config or MarketConfig()
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs: {num_envs!r} is invalid (an integer >= 1)")
        if len(data.pairs) * 2 + 1 > 2**15:
            raise ConfigError(f"pairs: {len(data.pairs)} pairs is too many")
        self.data = data
        self.config = config
        self.num_envs = num_envs
        self.window = config.env.obs_window
        self.record = record
        self.copy_obs = copy_obs
        self.autoreset = autoreset
        self.metadata = {
            "autoreset_mode": AutoresetMode.SAME_STEP if autoreset else AutoresetMode.DISABLED
        }
        T, P = data.n_bars, data.n_pairs
        span = T - self.window  # decision steps available after the observation window fills
        length = config.env.episode_length or span
        if length < 1 or length > span:
            raise DataError(
                f"episode_length={config.env.episode_length} needs {length + self.window} bars "
                f"(with obs_window={self.window}) but the data has {T} bars "
                f"({data.source}, {data.timeframe}); use more data or a shorter episode"
            )
        self.episode_length = length
        self.decision_interval = config.env.decision_interval
        self.decisions_per_episode = config.env.decisions(length)
        """Steps (transitions) of a full episode: ``episode_length`` bars in decisions."""
        self.obs_size = spot_obs_size(self.window, P, data.n_features)
        self._spot_obs_size = self.obs_size
        self.n_actions = 1 + 2 * P
        strategies = config.strategies
        self.strategies: StrategyRuntime | None = None
        if strategies.enabled != ("spot",):
            self.strategies = build_runtime(data, config)
            self.obs_size += self.strategies.obs_size
            self.n_actions = 1 + self.strategies.n_spot_actions + len(self.strategies.action_names)
            for note in self.strategies.notes:
                loud = "SIMULATED" in note or "WARNING" in note
                _say_once(logging.WARNING if loud else logging.INFO, note)
        bound = max(K.OBS_CLIP, float(np.abs(data.features).max()))
        self.single_observation_space = spaces.Box(-bound, bound, (self.obs_size,), np.float32)
        self.single_action_space = spaces.Discrete(self.n_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._params = _pack_params(config, record)
        self._params[K.P_SPOT_ACTIONS] = 2 * P  # all of them spot unless strategies say so
        self._rng = np.random.default_rng(seed)
        self._bpy = bars_per_year(data.timeframe)

        N = num_envs
        self._cursor = np.zeros((N, 3), dtype=np.int64)
        self._acct = np.zeros((N, N_ACCT), dtype=np.float64)
        self._pos = np.zeros((N, P, K.N_POS), dtype=np.float64)
        self._kelly = np.zeros((N, config.risk.kelly_window), dtype=np.float64)
        self._trade_count = np.zeros(N, dtype=np.int64)
        log_rows = config.env.max_trade_log if record else 1
        self._trade_log = np.zeros((N, log_rows, K.N_TRADE), dtype=np.float64)
        self._equity_curve = np.zeros((N, length + 1 if record else 1), dtype=np.float64)
        self._obs = [np.zeros((N, self.obs_size), dtype=np.float32) for _ in range(2)]
        self._final_obs = np.zeros((N, self.obs_size), dtype=np.float32)
        self._day = data.time // 86_400  # UTC day of every bar, for the daily loss limit
        self._obs_i = 0
        self._rewards = np.zeros(N, dtype=np.float32)
        self._rewards64 = np.zeros(N, dtype=np.float64)
        self._terminated = np.zeros(N, dtype=np.bool_)
        self._truncated = np.zeros(N, dtype=np.bool_)
        self._needs_reset = np.ones(N, dtype=np.bool_)
        self._all = np.ones(N, dtype=np.bool_)
        self._parallel = N >= PARALLEL_MIN_ENVS and numba.get_num_threads() > 1
        # the kernels' grouped arguments, built once (the arrays are only ever written in place)
        self._market = tuple(MarketTables(self._day, data.features, data.prices, self.window))
        self._books = tuple(SpotBooks(self._cursor, self._acct, self._pos, self._kelly,
                                      self._trade_log, self._trade_count, self._equity_curve,
                                      self._params))  # fmt: skip
        self._outs = [
            tuple(StepOutputs(obs, self._rewards64, self._terminated, self._truncated))
            for obs in self._obs
        ]
        self._init_strategy_arrays(N, P, seed)

    def _init_strategy_arrays(self, N: int, P: int, seed: int | None) -> None:
        """Strategy books (empty stand-ins when spot-only: the strategy kernel never runs)."""
        rt = self.strategies
        self._strategy_rng = np.random.default_rng([seed if seed is not None else 0, 31])
        if rt is None:
            self._ss = np.zeros((0, SC.N_SS))
            self._inv = np.zeros((0, P, 1, SC.N_INV))
            self._held = np.zeros((0, P, 1, SC.N_HELD))
            self._eta = np.zeros((0, P))
            return
        self._params[K.P_SPOT_ACTIONS] = rt.n_spot_actions
        self._sp = rt.sp
        self._ser = rt.ser
        self._prem = rt.prem
        self._arb_bar = rt.arb_bar
        self._slashing = rt.slashing
        self._ss = np.zeros((N, SC.N_SS))
        self._inv = np.zeros((N, P, rt.prem.shape[2], SC.N_INV))
        self._held = np.zeros((N, P, rt.prem.shape[2], SC.N_HELD))  # from _inv, see columns
        self._eta = np.full((N, P), -1.0)
        self._rand = np.ones(N)  # uniform draws for slashing (1.0 = no event)
        self._strategy_books = self._group_strategy_books()

    def _group_strategy_books(self) -> tuple[Any, ...]:
        """The strategy kernels' grouped argument (again after the per-bar inputs change)."""
        return tuple(StrategyBooks(
            self._sp, self._ss, self._inv, self._held, self._eta, self._ser, self._prem,
            self._arb_bar, self._rand, self._spot_obs_size,
        ))  # fmt: skip

    # ----------------------------------------------------------------------------------------
    def _sample_starts(self, count: int) -> np.ndarray:
        first = self.window - 1
        last = self.data.n_bars - 1 - self.episode_length
        if self.config.env.random_start and last > first:
            return self._rng.integers(first, last + 1, size=count, dtype=np.int64)
        return np.full(count, first, dtype=np.int64)

    def _reset_mask(self, mask: np.ndarray, starts: np.ndarray, out: np.ndarray) -> None:
        full_starts = np.zeros(self.num_envs, dtype=np.int64)
        full_starts[mask] = starts
        ends = np.minimum(full_starts + self.episode_length, self.data.n_bars - 1)
        K.reset_envs(mask, full_starts, ends, self._market, self._books, out)
        if self.strategies is not None:
            SK.reset_strategies(mask, self._market, self._books, self._strategy_books, out)
        self._needs_reset[mask] = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes in every env.

        ``options={"starts": [...]}`` fixes each env's first decision bar (evaluation); the
        episode then runs ``episode_length`` steps or to the end of the data, whichever is first.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        obs = self._obs[self._obs_i]
        if options and "starts" in options:
            starts = np.asarray(options["starts"], dtype=np.int64).reshape(-1)
            if starts.shape[0] != self.num_envs:
                raise ConfigError(f"reset starts: expected {self.num_envs} values, got {starts}")
            lo, hi = self.window - 1, self.data.n_bars - 2
            if starts.min() < lo or starts.max() > hi:
                raise ConfigError(f"reset starts: each must be in [{lo}, {hi}], got {starts}")
            self._reset_mask(self._all, starts, obs)
        else:
            self._reset_mask(self._all, self._sample_starts(self.num_envs), obs)
        return (obs.copy() if self.copy_obs else obs), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every env one decision: one bar, or ``decision_interval`` bars holding after
        the first. ``actions``: int [N] in ``[0, n_actions)``."""
        acts = np.asarray(actions)
        if acts.shape != (self.num_envs,):
            raise ConfigError(f"actions: expected shape ({self.num_envs},), got {acts.shape}")
        if acts.dtype != np.int64:
            acts = acts.astype(np.int64)
        if acts.min() < 0 or acts.max() >= self.n_actions:
            raise ConfigError(f"actions: values must be in [0, {self.n_actions}), got {acts}")
        if self._needs_reset.all():
            raise ConfigError("every env finished its episode; call reset() before stepping again")
        last = self.data.n_bars - 1
        if self._cursor[:, K.T_NOW].max() >= last and (
            self._cursor[~self._needs_reset, K.T_NOW].max() >= last  # frozen envs may sit there
        ):
            raise DataError("step: the data has no next bar to step into (supply more bars)")
        self._obs_i ^= 1
        obs = self._obs[self._obs_i]
        if self.decision_interval == 1:
            self._step_bar(~self._needs_reset, acts)
            rewards = self._rewards64.astype(np.float32)
            terminated = self._terminated.copy()
            truncated = self._truncated.copy()
        else:
            rewards, terminated, truncated = self._step_interval(acts, last)
        infos: dict[str, Any] = {}
        done = terminated | truncated
        if done.any():
            finished = np.flatnonzero(done)
            final_obs = self._final_obs if not self.copy_obs else np.zeros_like(obs)
            final_obs[finished] = obs[finished]
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done
            infos["episode"] = self._episode_info(finished)
            infos["_episode"] = done
            if self.autoreset:
                self._reset_mask(done, self._sample_starts(int(done.sum())), obs)
            else:
                self._needs_reset |= done
        return (obs.copy() if self.copy_obs else obs), rewards, terminated, truncated, infos

    def _step_bar(self, active: np.ndarray, acts: np.ndarray) -> None:
        """One bar of the envs in ``active`` on ``acts`` (the kernel writes the outputs)."""
        if self.strategies is None:
            kernel = K.step_envs if self._parallel else K.step_envs_serial
            kernel(active, acts, self._market, self._books, self._outs[self._obs_i])
        else:
            if self._slashing:
                self._strategy_rng.random(out=self._rand)
            both = SK.step_all if self._parallel else SK.step_all_serial
            both(active, acts, self._market, self._books, self._outs[self._obs_i],
                 self._strategy_books)  # fmt: skip

    def _step_interval(
        self, acts: np.ndarray, last: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``decision_interval`` bars: ``acts`` on the first, hold on the others; an env stops
        early when its episode ends (or the data runs out). Rewards are the interval's sums."""
        live = ~self._needs_reset
        hold = np.zeros_like(acts)
        total = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        for j in range(self.decision_interval):
            if j and (not live.any() or self._cursor[live, K.T_NOW].max() >= last):
                break
            self._step_bar(live, acts if j == 0 else hold)
            total[live] += self._rewards64[live]
            terminated |= self._terminated
            truncated |= self._truncated
            live &= ~(self._terminated | self._truncated)
        return total.astype(np.float32), terminated, truncated

    # ----------------------------------------------------------------------------------------
    def _episode_info(self, finished: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of the episodes that just ended in envs ``finished`` (0 elsewhere)."""
        a = self._acct[finished]
        growth = a[:, K.EQUITY] / a[:, K.START_EQ]
        columns = {
            "r": (np.log(growth), np.float64),
            "l": (a[:, K.STEPS], np.int64),
            "return_pct": ((growth - 1.0) * 100.0, np.float64),
            "trades": (a[:, K.N_TRADES], np.int64),
            "max_drawdown_pct": (a[:, K.MAX_DD] * 100.0, np.float64),
            "fees": (a[:, K.FEES], np.float64),
        }
        info = {}
        for name, (values, dtype) in columns.items():
            column = np.zeros(self.num_envs, dtype=dtype)
            column[finished] = values
            info[name] = column
        return info

    def episode_metrics(self, env: int) -> EpisodeMetrics:
        """Metrics of env ``env``'s current (or just finished) episode, from running totals."""
        a = self._acct[env]
        steps = a[K.STEPS]
        mean = a[K.RET_SUM] / steps if steps else 0.0
        var = (a[K.RET_SQ] - steps * mean * mean) / (steps - 1) if steps > 1 else 0.0
        std = math.sqrt(max(var, 0.0))
        downside = math.sqrt(a[K.DOWN_SQ] / steps) if steps else 0.0
        root = math.sqrt(self._bpy)
        n_trades = int(a[K.N_TRADES])
        gross_loss = a[K.GROSS_LOSS]
        if gross_loss > 0:
            profit_factor = a[K.GROSS_PROFIT] / gross_loss
        else:
            profit_factor = math.inf if a[K.GROSS_PROFIT] > 0 else 0.0
        return EpisodeMetrics(
            total_return_pct=(a[K.EQUITY] / a[K.START_EQ] - 1.0) * 100.0,
            sharpe=mean / std * root if std > 1e-12 else 0.0,
            sortino=mean / downside * root if downside > 1e-12 else 0.0,
            max_drawdown_pct=a[K.MAX_DD] * 100.0,
            win_rate=a[K.N_WINS] / n_trades if n_trades else 0.0,
            profit_factor=profit_factor,
            n_trades=n_trades,
            exposure=a[K.EXPOSED_STEPS] / steps if steps else 0.0,
            fees_paid=a[K.FEES],
            final_equity=a[K.EQUITY],
        )

    def strategy_breakdown(self, env: int) -> dict[str, float]:
        """PnL per strategy in quote currency (``pnl_spot``, ``pnl_staking``, ...) and strategy
        details (LP fees, gas, impermanent loss, arbitrage trades...) of env ``env``'s episode;
        empty when only spot is on."""
        if self.strategies is None:
            return {}
        a = self._acct[env]
        return breakdown(self._ss[env], float(a[K.START_EQ]), float(a[K.EQUITY]), self.strategies)

    def risk_counters(self, env: int) -> dict[str, int]:
        """How often the risk manager intervened in env ``env``'s episode."""
        a = self._acct[env]
        return {"blocked_entries": int(a[K.N_BLOCKED]), "daily_limit_hits": int(a[K.N_LIMIT_HITS])}

    def equity_curve(self, env: int) -> np.ndarray:
        """Equity after each step of env ``env``'s episode, starting balance first (record mode)."""
        self._require_record()
        curve = self._equity_curve[env]
        steps = int(self._acct[env, K.STEPS])
        return curve[: steps + 1].copy()

    def trades(self, env: int) -> list[dict[str, Any]]:
        """Closed trades of env ``env``'s episode (record mode), oldest first."""
        self._require_record()
        count = int(self._trade_count[env])
        if count > self._trade_log.shape[1]:
            raise DataError(
                f"env {env} closed {count} trades but only {self._trade_log.shape[1]} are kept; "
                "raise env.max_trade_log"
            )
        time = self.data.time
        out = []
        for row in self._trade_log[env, :count]:
            entry_bar, exit_bar = int(row[K.TL_ENTRY_BAR]), int(row[K.TL_EXIT_BAR])
            out.append(
                {
                    "pair": self.data.pairs[int(row[K.TL_PAIR])],
                    "entry_time": int(time[entry_bar]),
                    "exit_time": int(time[exit_bar]),
                    "entry_bar": entry_bar,
                    "exit_bar": exit_bar,
                    "entry_price": float(row[K.TL_ENTRY_PRICE]),
                    "exit_price": float(row[K.TL_EXIT_PRICE]),
                    "quantity": float(row[K.TL_QTY]),
                    "pnl": float(row[K.TL_PNL]),
                    "return": float(row[K.TL_RETURN]),
                    "fees": float(row[K.TL_FEES]),
                    "reason": K.REASON_NAMES[int(row[K.TL_REASON])],
                }
            )
        return out

    def positions(self, env: int) -> dict[str, dict[str, float]]:
        """Open positions of env ``env``: pair -> quantity, entry price, highest high."""
        out = {}
        for p, pair in enumerate(self.data.pairs):
            row = self._pos[env, p]
            if row[K.QTY] > 0:
                out[pair] = {
                    "quantity": float(row[K.QTY]),
                    "entry_price": float(row[K.ENTRY_PRICE]),
                    "high_water": float(row[K.HIGH_WATER]),
                    "entry_bar": int(row[K.ENTRY_BAR]),
                }
        return out

    def account(self, env: int) -> dict[str, float]:
        """Cash and equity of env ``env`` at its current bar."""
        a = self._acct[env]
        return {
            "cash": float(a[K.CASH]),
            "equity": float(a[K.EQUITY]),
            "day_start_equity": float(a[K.DAY_START_EQ]),
            "locked": bool(a[K.LOCKED]),
        }

    def current_bar(self, env: int) -> int:
        """Index in ``data`` of env ``env``'s current bar."""
        return int(self._cursor[env, K.T_NOW])

    def current_bars(self) -> np.ndarray:
        """Index in ``data`` of every env's current bar, int64 [N] (a copy)."""
        return self._cursor[:, K.T_NOW].copy()

    def position_mask(self) -> np.ndarray:
        """bool [N, P]: which pairs each env holds a position in."""
        return self._pos[:, :, K.QTY] > 0.0

    # ---- live use: state, growing data, open-ended episodes ------------------------------------
    _STATE_ARRAYS = ("_cursor", "_acct", "_pos", "_kelly", "_trade_count", "_trade_log",
                     "_needs_reset")  # fmt: skip

    _STRATEGY_ARRAYS = ("_ss", "_inv", "_eta")

    def _state_arrays(self) -> tuple[str, ...]:
        extra = self._STRATEGY_ARRAYS if self.strategies is not None else ()
        return self._STATE_ARRAYS + extra

    def state_dict(self) -> dict[str, Any]:
        """Copies of every per-env state array and the start-sampling RNG state.

        The recorded equity curve is not part of it (its length is the episode's, which an
        open-ended run outgrows); live users keep equity history themselves. With strategies
        on, their books and the slashing RNG are included.
        """
        state: dict[str, Any] = {
            name[1:]: getattr(self, name).copy() for name in self._state_arrays()
        }
        state["rng"] = self._rng.bit_generator.state
        if self.strategies is not None:
            state["strategy_rng"] = self._strategy_rng.bit_generator.state
        state["obs"] = self._obs[self._obs_i].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output (shapes and dtypes must match this env)."""
        missing = [name[1:] for name in self._state_arrays() if name[1:] not in state]
        if missing:
            raise ConfigError(
                f"env state: missing {', '.join(missing)} (saved by an env with other strategies?)"
            )
        for name in self._state_arrays():
            current = getattr(self, name)
            value = np.asarray(state[name[1:]])
            if name == "_acct" and value.ndim == 2 and value.shape[1] == N_ACCT - 1:
                value = np.pad(value, ((0, 0), (0, 1)))  # saved before strategies existed
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ConfigError(
                    f"env state {name[1:]}: expected {current.dtype}{list(current.shape)}, "
                    f"got {value.dtype}{list(value.shape)}"
                )
            current[...] = value
        self._rng.bit_generator.state = state["rng"]
        if self.strategies is not None:
            self._refresh_held()
            if "strategy_rng" in state:
                self._strategy_rng.bit_generator.state = state["strategy_rng"]
        self._obs[self._obs_i][...] = state["obs"]

    def _refresh_held(self) -> None:
        """The arbitrage holdings the kernels keep beside the inventory (not saved: derived),
        summed as ``kernel_arbitrage.arb_refresh_held`` sums them."""
        inv, held = self._inv, self._held
        held[..., SC.HELD_BASE] = inv[..., SC.INV_BASE] + inv[..., SC.INV_BASE_TRANSIT]
        held[..., SC.HELD_QUOTE] = inv[..., SC.INV_QUOTE] + inv[..., SC.INV_QUOTE_TRANSIT]

    def replace_data(self, data: MarketData) -> np.ndarray:
        """Swap in ``data`` that extends the current data (new bars at the end), keeping state.

        Returns the observation of every env at its current bar, recomputed from ``data``.
        """
        old = self.data
        if (data.pairs, data.timeframe, data.feature_names) != (
            old.pairs,
            old.timeframe,
            old.feature_names,
        ):
            raise DataError("replace_data: new data must have the same pairs, timeframe, features")
        shared = min(old.n_bars, data.n_bars)
        if not np.array_equal(old.time[:shared], data.time[:shared]):
            raise DataError("replace_data: new data must keep the bars the env already used")
        if int(self._cursor[:, K.T_NOW].max()) >= data.n_bars:
            raise DataError("replace_data: new data is shorter than the bars already stepped")
        self.data = data
        self._day = data.time // 86_400
        self._market = tuple(MarketTables(self._day, data.features, data.prices, self.window))
        if self.strategies is not None:  # per-bar inputs must cover the new bars
            self.strategies = rt = build_runtime(data, self.config)
            self._sp, self._ser, self._prem, self._arb_bar = rt.sp, rt.ser, rt.prem, rt.arb_bar
            self._strategy_books = self._group_strategy_books()
        obs = self._obs[self._obs_i]
        for n in range(self.num_envs):
            K._write_obs(n, self._market, self._books, obs[n])
        if self.strategies is not None:
            SK.write_all_strategy_obs(self._market, self._books, self._strategy_books, obs)
        return obs.copy() if self.copy_obs else obs

    def run_open_ended(self) -> None:
        """Never truncate: episodes run for as long as new bars are supplied (paper trading).

        The caller must only ``step`` when the data holds the next bar of every env.
        """
        self._cursor[:, K.T_END] = np.iinfo(np.int64).max

    def _require_record(self) -> None:
        if not self.record:
            raise ConfigError("equity curves and trades are kept only with record=True")
