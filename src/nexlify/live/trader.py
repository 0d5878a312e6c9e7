"""The paper trader: closed candles in, the simulator's decisions, fills and risk rules out.

Same code path as training and backtests: every new bar, the candle history is turned into a
``MarketData`` by ``build_market_data`` (features are prefix-stable, so the rows already used
never change), the ``VecMarketEnv`` gets the longer data (``replace_data``) and steps one bar
with the decision taken after the previous bar; the model then decides on the new observation.
The decision after bar t fills at bar t+1's open, exactly as in a backtest.

Each new candle is processed in ONE database transaction (see :mod:`nexlify.live.store`); a
restart rebuilds the data from the stored candles and restores the env state, so it continues
exactly where it stopped.

Feed gaps: a bar missing from the feed is filled flat at the previous close (volume 0), as the
training data is, and logged. **Protection**: while any of the last ``gap_cooldown`` bars up to
the decision bar is such a filled bar, buy decisions are replaced by *hold*: no new entries on
data that is not contiguous. Sells and the simulator's stop-loss, take-profit, trailing stop and
daily loss limit still act, so open positions stay protected by their stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nexlify.config import MarketConfig, timeframe_seconds
from nexlify.data.candles import candle_frame
from nexlify.data.features import (
    FEATURE_WARMUP,
    FeatureConfig,
    feature_config_from_dict,
    feature_warmup,
)
from nexlify.data.market_data import MarketData, build_market_data
from nexlify.live.feeds import Bar
from nexlify.live.store import SessionStore
from nexlify.market.env import VecMarketEnv
from nexlify.market.obs_layout import spot_action_count, spot_order

if TYPE_CHECKING:
    from nexlify.live.retrain import SessionRetrainer


class Policy(Protocol):
    """Anything that picks greedy actions for a batch of observations (agent or ensemble)."""

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray: ...


def paper_market_config(market: MarketConfig) -> MarketConfig:
    """The model's market settings for an open-ended session: one episode, never liquidated."""
    env = replace(market.env, episode_length=0, random_start=False, close_at_end=False)
    return replace(market, env=env)


def bar_by_bar(market: MarketConfig) -> MarketConfig:
    """``market`` stepping one bar per call: a session steps each bar as it closes and keeps
    the decision interval itself (:meth:`PaperTrader._decide`)."""
    return replace(market, env=replace(market.env, decision_interval=1))


def with_placeholder_bar(data: MarketData, n_bars: int | None = None) -> MarketData:
    """The first ``n_bars`` bars of ``data`` (default all) plus one flat bar after them, so an
    env can start at the last of those bars even when it is the only one.

    The env never steps into the placeholder: the real next bar replaces it (``replace_data``)
    first.
    """
    n = data.n_bars if n_bars is None else n_bars
    if not 1 <= n <= data.n_bars:
        raise ValueError(f"with_placeholder_bar: n_bars={n} outside 1..{data.n_bars}")

    def grow(a: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([a[:n], extra]))

    close = data.prices[n - 1 : n, :, 3:4]
    return replace(
        data,
        time=grow(data.time, data.time[n - 1 : n] + data.bar_seconds),
        prices=grow(data.prices, np.repeat(close, 4, axis=2)),
        volume=grow(data.volume, np.zeros_like(data.volume[:1])),
        features=grow(data.features, data.features[n - 1 : n]),
        filled=grow(data.filled, np.ones_like(data.filled[:1])),
    )


def warmup_bars_needed(
    first_time: int,
    start_time: int | None,
    step: int,
    window: int,
    features_warmup: int = FEATURE_WARMUP,
) -> int:
    """Contiguous candles per pair a session needs before its first decision: the feature
    warm-up (``features_warmup``: the model's, see ``ModelSpec.feature_warmup``), the
    observation window, and (with ``start_time``) every bar before the start."""
    start_index = 0 if start_time is None else max(0, -(-(start_time - first_time) // step))
    return max(features_warmup + 2, max(features_warmup, start_index) + window)


def recorded_features_warmup(market_config: dict[str, Any] | None) -> int:
    """The feature warm-up of a session's model, from the market settings its session row
    records (``features``: the model's feature set); sessions recorded before it use the
    default feature set, the only one there was."""
    recorded = (market_config or {}).get("features")
    return (
        FEATURE_WARMUP if recorded is None else feature_warmup(feature_config_from_dict(recorded))
    )


def warmup_progress(
    span: tuple[int, int] | None,
    start_time: int | None,
    step: int,
    window: int,
    features_warmup: int = FEATURE_WARMUP,
) -> tuple[int, int]:
    """(candles held, candles needed) of a session still warming up, from the ``span`` (first,
    last bar time) every pair's candles cover (None before each pair has one)."""
    if span is None:
        return 0, warmup_bars_needed(0, None, step, window, features_warmup)
    first, last = span
    need = warmup_bars_needed(first, start_time, step, window, features_warmup)
    return max(0, (last - first) // step + 1), need


def first_decision_index(times: np.ndarray, start_time: int | None, window: int) -> int:
    """The bar (of a session's data, bar open ``times``) of its first decision: the last of
    the first observation window at or after ``start_time``."""
    first = 0 if start_time is None else int(np.searchsorted(times, start_time, side="left"))
    return first + window - 1


class CandleHistory:
    """Every closed candle of the session per pair, and the MarketData built from them with
    the model's feature set."""

    def __init__(
        self,
        pairs: tuple[str, ...],
        timeframe: str,
        source: str,
        features: FeatureConfig | None = None,
    ) -> None:
        self.pairs = pairs
        self.timeframe = timeframe
        self.source = source
        self.features = features or FeatureConfig()
        self.features_warmup = feature_warmup(self.features)
        self.step = timeframe_seconds(timeframe)
        self.rows: dict[str, list[tuple[float, ...]]] = {p: [] for p in pairs}

    def load(self, stored: dict[str, np.ndarray]) -> None:
        for pair in self.pairs:
            self.rows[pair] = [tuple(r) for r in stored[pair].tolist()]

    def append(self, bar: Bar) -> dict[str, tuple[float, ...]]:
        """Add the bar's candles (later than each pair's last); returns those added."""
        added = {}
        for pair, ohlcv in bar.candles.items():
            rows = self.rows.get(pair)
            if rows is not None and (not rows or rows[-1][0] < bar.time):
                rows.append((float(bar.time), *ohlcv))
                added[pair] = rows[-1]
        return added

    def span(self) -> tuple[int, int] | None:
        """(first, last) bar time held by every pair, or None before each pair has a candle."""
        if any(not rows for rows in self.rows.values()):
            return None
        first = max(rows[0][0] for rows in self.rows.values())
        last = min(rows[-1][0] for rows in self.rows.values())
        return int(first), int(last)

    def market_data(self) -> MarketData | None:
        """Aligned candles and features, or None while the feature warm-up is not complete."""
        span = self.span()
        if span is None or (span[1] - span[0]) // self.step + 1 < self.features_warmup + 2:
            return None  # MarketData needs 2 bars after the warm-up
        frames = {}
        for pair, rows in self.rows.items():
            arr = np.asarray(rows, dtype=np.float64)
            frames[pair] = candle_frame(arr[:, 0].astype(np.int64), arr[:, 1:6])
        return build_market_data(frames, self.timeframe, self.source, features=self.features)


@dataclass
class StepReport:
    """What one processed batch of bars did (for the status view and logs)."""

    new_bars: int = 0
    duplicates: int = 0
    stepped: int = 0
    trades: list[dict[str, Any]] | None = None
    pending_action: int = 0


class PaperTrader:
    """Runs a policy over a feed of closed candles, with its state in a :class:`SessionStore`;
    ``features`` is the model's feature set (``ModelSpec.features``)."""

    def __init__(
        self,
        store: SessionStore,
        policy: Policy,
        pairs: tuple[str, ...],
        timeframe: str,
        market: MarketConfig,
        *,
        start_time: int | None = None,
        gap_cooldown: int = 24,
        source: str = "paper",
        logger: logging.Logger | None = None,
        features: FeatureConfig | None = None,
        retrainer: SessionRetrainer | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.retrainer = retrainer
        """Rolling retraining (``--retrain-every``): swaps ``policy`` when a candidate wins."""
        self.policy_file: str | None = None
        """The model file ``policy`` was loaded from after a swap (None: the session's)."""
        self.config = paper_market_config(market)
        self.step_config = bar_by_bar(self.config)
        """What the session's simulator steps on: one bar per call."""
        self.window = self.config.env.obs_window
        self.start_time = start_time
        self.gap_cooldown = gap_cooldown
        self.log = logger or logging.getLogger("nexlify.paper")
        self.history = CandleHistory(pairs, timeframe, source, features)
        self.env: VecMarketEnv | None = None
        self._data: MarketData | None = None
        """The data of the last processed bar (what a retrain launched after it reads)."""
        self.pending = 0
        self.finished = False
        """True once the account fell below the ruin level (the session cannot go on)."""
        self.reload()

    def reload(self) -> None:
        """(Re)build the candle history and the env from the database: restart, or recovery
        after a failed transaction."""
        self.history.load(self.store.candles(list(self.history.pairs)))
        self.env, self.pending = None, 0
        if self.retrainer is not None:
            self._reload_retrains()
        saved = self.store.env_state()
        if saved is None:
            return
        _, self.pending, state = saved
        data = self.history.market_data()
        if data is None:  # cannot happen with a consistent database
            raise RuntimeError(f"{self.store.path}: env state saved but too few candles stored")
        self.env = self._make_env(data)
        self.env.load_state_dict(state)
        self.finished = bool(state["needs_reset"][0])
        if self.retrainer is not None:  # a retrain cut by a crash starts again
            self.retrainer.launch_due(data, self._first_decision_bar(data))

    def _reload_retrains(self) -> None:
        """The model the session's last recorded retrain left trading."""
        assert self.retrainer is not None
        self.retrainer.reload()
        model = self.retrainer.trading_model
        if model != (self.policy_file or self.retrainer.initial_model):
            self._load_policy(model)

    def _load_policy(self, path: str) -> None:
        from nexlify.agent.ensemble import load_policy

        self.policy = load_policy(path)[0]
        self.policy_file = path

    # ----------------------------------------------------------------------------------------
    def _make_env(self, data: MarketData, n_bars: int | None = None) -> VecMarketEnv:
        """An env over the first ``n_bars`` bars of ``data`` (default all) and a placeholder."""
        placed = with_placeholder_bar(data, n_bars)
        return VecMarketEnv(placed, self.step_config, autoreset=False, record=True)

    def _first_decision_bar(self, data: MarketData) -> int:
        return first_decision_index(data.time, self.start_time, self.window)

    def _protecting(self, data: MarketData, bar: int) -> bool:
        lo = max(0, bar - self.gap_cooldown + 1)
        return bool(data.filled[lo : bar + 1].any())

    def _decide(self, obs: np.ndarray, data: MarketData, bar: int, c: Any) -> int:
        if self.retrainer is not None:
            swapped = self.retrainer.before_decision(data, self._first_decision_bar(data), bar, c)
            if swapped is not None:
                self._load_policy(swapped)
        if (bar - self._first_decision_bar(data)) % self.config.env.decision_interval:
            return 0  # inside a decision interval: hold, as the model was trained and tested
        action = int(np.asarray(self.policy.greedy(obs)).reshape(-1)[0])
        order = spot_order(action, spot_action_count(self.config, data.n_pairs))
        if order is not None and order[1] and self._protecting(data, bar):
            message = (
                f"buy {data.pairs[order[0]]} held back: the last {self.gap_cooldown} "
                "bars contain a filled gap"
            )
            self.log.warning(message)
            self.store.add_event("protect", message, "warning", int(data.time[bar]), c)
            return 0
        return action

    def _take_trades(self, env: VecMarketEnv) -> list[dict[str, Any]]:
        """Trades closed since the last call; the env's trade log is emptied after reading."""
        trades = env.trades(0)
        if trades:
            state = env.state_dict()
            state["trade_count"][...] = 0
            env.load_state_dict(state)
        return trades

    def _sim_orders(
        self, c: Any, env: VecMarketEnv, bar: int, trades: list[dict[str, Any]]
    ) -> None:
        t = int(env.data.time[bar])
        fills = [
            (p["entry_price"], p["quantity"], pair, "buy")
            for pair, p in env.positions(0).items()
            if p["entry_bar"] == bar
        ]
        fills += [
            (tr["entry_price"], tr["quantity"], tr["pair"], "buy")
            for tr in trades
            if tr["entry_bar"] == bar
        ]
        fills += [(tr["exit_price"], tr["quantity"], tr["pair"], "sell") for tr in trades]
        for price, qty, pair, side in fills:
            self.store.add_order(
                c,
                kind="sim",
                bar_time=t,
                pair=pair,
                side=side,
                amount=qty,
                price=price,
                status="filled",
                filled=qty,
            )

    def _snapshot(self, c: Any, env: VecMarketEnv, bar: int) -> None:
        account: dict[str, Any] = dict(env.account(0))
        positions = env.positions(0)
        account["open_positions"] = len(positions)
        self.store.add_equity(c, int(env.data.time[bar]), account)

    def _advance(self, data: MarketData, c: Any, report: StepReport) -> None:
        if self.env is None:
            decision = self._first_decision_bar(data)
            if data.n_bars - 1 < decision:
                return
            self.env = self._make_env(data, decision + 1)
            obs, _ = self.env.reset(options={"starts": [decision]})
            self.env.run_open_ended()
            self.pending = self._decide(obs, data, decision, c)
            self._snapshot(c, self.env, decision)
            self.log.info("session starts trading at bar %s", _iso(int(data.time[decision])))
        env = self.env
        obs = env.replace_data(data)
        trades: list[dict[str, Any]] = []
        while env.current_bar(0) < data.n_bars - 1:
            obs, _, terminated, _, _ = env.step(np.array([self.pending]))
            bar = env.current_bar(0)
            new = self._take_trades(env)
            self._sim_orders(c, env, bar, new)
            self._snapshot(c, env, bar)
            trades += new
            report.stepped += 1
            if terminated[0]:
                message = "equity fell below the ruin level; the session has ended"
                self.log.error(message)
                self.store.add_event("ruin", message, "error", int(data.time[bar]), c)
                self.finished = True
                break
            self.pending = self._decide(obs, data, bar, c)
        clean = [
            {k: v for k, v in tr.items() if k not in ("entry_bar", "exit_bar")} for tr in trades
        ]
        self.store.add_trades(c, clean)
        positions = [
            {
                "pair": pair,
                "quantity": p["quantity"],
                "entry_price": p["entry_price"],
                "entry_time": int(data.time[int(p["entry_bar"])]),
                "high_water": p["high_water"],
            }
            for pair, p in env.positions(0).items()
        ]
        self.store.set_positions(c, positions)
        bar = env.current_bar(0)
        self.store.set_env_state(c, int(data.time[bar]), self.pending, env.state_dict())
        report.trades = clean
        report.pending_action = self.pending

    def process(self, bars: list[Bar]) -> StepReport:
        """Process new closed bars in one transaction; bars at or before the cursor are skipped."""
        if self.retrainer is not None:
            self.retrainer.settle()  # replay: wait here, not inside the transaction
        try:
            report = self._process(bars)
        except BaseException:
            self.reload()  # the transaction was rolled back: drop what memory holds beyond it
            raise
        if self.retrainer is not None and self._data is not None:
            self.retrainer.launch_due(self._data, self._first_decision_bar(self._data))
        return report

    def _process(self, bars: list[Bar]) -> StepReport:
        report = StepReport()
        step = self.history.step
        if self.finished:
            return report
        with self.store.transaction() as c:
            cursor = self.store.cursor()
            fresh = [b for b in bars if cursor is None or b.time > cursor]
            report.duplicates = len(bars) - len(fresh)
            if report.duplicates:
                self.log.info("skipped %d bar(s) already processed", report.duplicates)
            if not fresh:
                return report
            expected = None if cursor is None else cursor + step
            for b in fresh:
                if expected is not None and b.time > expected:
                    missing = (b.time - expected) // step
                    message = (
                        f"feed gap: {missing} bar(s) missing from {_iso(expected)}; "
                        "filled flat at the previous close, new entries held back"
                    )
                    self.log.warning(message)
                    self.store.add_event("gap", message, "warning", expected, c)
                for pair, row in self.history.append(b).items():
                    self.store.add_candles(c, pair, [row])
                expected = b.time + step
            data = self.history.market_data()
            self._data = data
            if data is not None:
                self._advance(data, c, report)
            self.store.set_cursor(c, fresh[-1].time, len(fresh))
            report.new_bars = len(fresh)
        return report


def _iso(t: int) -> str:
    import pandas as pd

    return pd.Timestamp(t, unit="s", tz="UTC").isoformat()
