"""Look-ahead audit: prove that nothing known at bar t depends on data after t.

For each cut point c, every input is cut as it stood at the close of bar c - 1: the candles after
it are removed, external daily series keep the days published by then, strategy CSVs and venue
candles keep their rows up to then (:mod:`nexlify.evaluation.lookahead_inputs`). Everything is
recomputed from scratch on those inputs: the features (candle and external), then the env's
observation rows bar by bar under a fixed, data-blind action schedule (every column: features,
portfolio state, strategy observations), and with a model its greedy decisions. Every value for
a bar before the cut must be identical to the full-data run; any difference is a leak, reported
with the first bar and the column (pair, feature, strategy value or decision) where it shows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.config import MarketConfig, timeframe_seconds
from nexlify.data.align import AlignedCandles, align_candles
from nexlify.data.features import FeatureConfig, compute_market_features
from nexlify.data.market_data import MarketData
from nexlify.errors import DataError
from nexlify.evaluation.lookahead_inputs import (
    ExternalInputs,
    external_block,
    truncated_strategies,
)
from nexlify.market.env import VecMarketEnv
from nexlify.market.evaluate import GreedyActor

FeatureFn = Callable[[np.ndarray], tuple[np.ndarray, tuple[str, ...]]]
"""Computes features [T, P, F] (NaN during warm-up) and their names from ohlcv [T, P, 5]."""

KINDS = ("feature", "external", "observation", "decision")
"""Leak kinds: candle feature, external-series feature, env observation column, model decision."""

_PAIR_STATE = ("in_position", "unrealised_pnl", "time_in_trade")
_ACCOUNT_STATE = ("cash_share", "episode_return", "daily_loss_lock", "open_trades")
_STRATEGY_OBS = {
    "staking": ("staked share", "unbonding share", "APY", "unbonding left"),
    "lending": ("supplied share", "supply rate", "utilisation"),
    "liquidity": ("position share", "in range", "place in range", "impermanent loss"),
}


@dataclass(frozen=True)
class Leak:
    """The first place where a cut changed something that was known before the cut."""

    cut: int
    kind: str
    bar: int
    time: str
    detail: str


@dataclass
class AuditReport:
    """An audit's cuts, the column kinds it covered and every leak found (empty = clean)."""

    cuts: list[int]
    bars: int
    checked_decisions: bool
    covered: list[str] = field(default_factory=list)
    """The observation's column kinds that were checked, e.g. "external series: fear_greed"."""
    leaks: list[Leak] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.leaks


@dataclass(frozen=True)
class _Run:
    """Everything recomputed for one set of inputs (full, or cut)."""

    features: np.ndarray
    """Raw-bar features [T, P, F] incl. external ones (NaN in the warm-up)."""
    names: tuple[str, ...]
    data: MarketData
    warmup: int
    config: MarketConfig


class _ActionSchedule:
    """A data-blind policy: call k returns action k of a seeded schedule, whatever it observes."""

    def __init__(self, actions: np.ndarray) -> None:
        self._actions = actions
        self._k = 0

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray:
        if self._k >= self._actions.size:
            raise DataError("look-ahead audit: the action schedule is shorter than the run")
        self._k += 1
        return self._actions[self._k - 1 : self._k]


def _run(
    aligned: AlignedCandles,
    stop: int,
    timeframe: str,
    fn: FeatureFn,
    external: ExternalInputs | None,
    config: MarketConfig,
    workdir: Path | None,
) -> _Run:
    """Features and market on bars ``[0, stop)``; inputs cut at that bar's close if ``workdir``."""
    time, ohlcv = aligned.time[:stop], aligned.ohlcv[:stop]
    bar_s = timeframe_seconds(timeframe)
    features, names = fn(ohlcv)
    cut_s = int(time[-1]) + bar_s if workdir is not None else None
    if external is not None and external.names:
        block, ext_names = external_block(time, bar_s, external, cut_s, workdir)
        wide = np.broadcast_to(block[:, None, :], (time.size, len(aligned.pairs), block.shape[1]))
        features = np.concatenate([features, wide.astype(features.dtype)], axis=2)
        names = (*names, *ext_names)
    if cut_s is not None and workdir is not None and config.strategies.enabled != ("spot",):
        strategies = truncated_strategies(
            config.strategies, cut_s, int(time[-1]), aligned.pairs, timeframe, workdir
        )
        config = replace(config, strategies=strategies)
    data, warmup = _market(time, ohlcv, features, names, aligned.pairs, timeframe)
    return _Run(features, tuple(names), data, warmup, config)


def _market(
    time: np.ndarray,
    ohlcv: np.ndarray,
    features: np.ndarray,
    names: Sequence[str],
    pairs: tuple[str, ...],
    timeframe: str,
) -> tuple[MarketData, int]:
    valid = ~np.isnan(features).any(axis=(1, 2))
    if not valid.any():
        raise DataError("look-ahead audit: too few bars to compute features")
    first = int(np.argmax(valid))
    data = MarketData(
        pairs=pairs,
        timeframe=timeframe,
        time=np.ascontiguousarray(time[first:], dtype=np.int64),
        prices=np.ascontiguousarray(ohlcv[first:, :, :4], dtype=np.float32),
        volume=np.ascontiguousarray(ohlcv[first:, :, 4], dtype=np.float32),
        features=np.ascontiguousarray(features[first:], dtype=np.float32),
        feature_names=tuple(names),
        filled=np.zeros((time.size - first, len(pairs)), dtype=np.bool_),
        source="audit",
    )
    return data, first


def _env(data: MarketData, config: MarketConfig) -> VecMarketEnv:
    env_cfg = replace(config.env, episode_length=0, random_start=False, close_at_end=False)
    return VecMarketEnv(data, replace(config, env=env_cfg), autoreset=False, copy_obs=True)


def _decisions(agent: GreedyActor, data: MarketData, config: MarketConfig) -> np.ndarray:
    """Rows [observation..., action] for every bar of one run, the last bar included.

    Positions are not liquidated at the end (``close_at_end=False``), so the state at a cut's
    last bar is the same as at that bar of the full run and its decision can be compared too.
    """
    env = _env(data, config)
    obs, _ = env.reset()
    rows = []
    done = False
    while True:
        action = agent.greedy(obs)
        rows.append(np.concatenate([obs[0], action.astype(np.float32)]))
        if done:
            return np.stack(rows)
        obs, _, term, trunc, _ = env.step(action)
        done = bool(term[0] or trunc[0])


def observation_columns(env: VecMarketEnv) -> list[tuple[str, str]]:
    """(kind, label) of every observation column of ``env``, in order."""
    data = env.data
    columns: list[tuple[str, str]] = []
    for w in range(env.window - 1, -1, -1):
        for pair in data.pairs:
            for name in data.feature_names:
                kind = "external series" if name.startswith("ext_") else "candle feature"
                columns.append((kind, f"{pair} {name} (bar t-{w})"))
    columns += [("portfolio", f"{pair} {s}") for pair in data.pairs for s in _PAIR_STATE]
    columns += [("portfolio", s) for s in _ACCOUNT_STATE]
    rt = env.strategies
    for book in ("staking", "lending", "liquidity") if rt is not None else ():
        if book in rt.enabled:  # type: ignore[union-attr]
            columns += [("strategy", f"{book} {s}") for s in _STRATEGY_OBS[book]]
    if rt is not None and "arbitrage" in rt.enabled:
        columns += [("strategy", f"arbitrage spread {pair}") for pair in data.pairs]
        columns += [("strategy", "arbitrage book share"), ("strategy", "arbitrage transfer")]
    if len(columns) != env.obs_size:
        raise RuntimeError(f"audit labels {len(columns)} columns, the env has {env.obs_size}")
    return columns


def _coverage(columns: list[tuple[str, str]], external: ExternalInputs | None) -> list[str]:
    """What the observation check covers, by column kind (for the audit's output)."""
    counts: dict[str, int] = {}
    for kind, _ in columns:
        counts[kind] = counts.get(kind, 0) + 1
    out = []
    for kind, count in counts.items():
        what = f"{kind} ({count} columns)"
        if kind == "external series" and external is not None:
            what += f": {', '.join(external.names)}, as published (day end + provider lag)"
        if kind == "strategy":
            books = sorted({label.split()[0] for k, label in columns if k == kind})
            what += f": {', '.join(books)}"
        out.append(what)
    return out


def _first_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, ...] | None:
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return None
    return tuple(int(i) for i in np.argwhere(~same)[0])


def _candle_features(features: FeatureConfig | None) -> FeatureFn:
    if features is None:  # one-argument call: tests plant leaks by replacing the function
        return lambda ohlcv: compute_market_features(ohlcv)
    return lambda ohlcv: compute_market_features(ohlcv, config=features)


def default_cuts(n_bars: int, warmup: int, count: int) -> list[int]:
    """``count`` cut points spread evenly between the warm-up and the end."""
    lo = warmup + max(10, (n_bars - warmup) // (count + 1))
    return sorted({int(c) for c in np.linspace(lo, n_bars - 2, count)})


@dataclass(frozen=True)
class _Reference:
    """The full-data run every cut is compared with."""

    run: _Run
    aligned: AlignedCandles
    columns: list[tuple[str, str]]
    schedule: np.ndarray
    observations: np.ndarray
    decisions: np.ndarray | None


def audit_lookahead(
    frames: Mapping[str, pd.DataFrame],
    timeframe: str,
    *,
    cuts: Sequence[int] | None = None,
    n_cuts: int = 5,
    feature_fn: FeatureFn | None = None,
    agent: GreedyActor | None = None,
    market: MarketConfig | None = None,
    external: ExternalInputs | None = None,
    schedule_seed: int = 0,
    features: FeatureConfig | None = None,
) -> AuditReport:
    """Audit features, every observation column (and, with ``agent``, decisions) at every cut
    (raw bar indices). ``market`` brings the strategies and their inputs; ``external`` the
    external daily series; ``features`` the candle feature set (a model's; default the default
    set), unless ``feature_fn`` replaces the candle features altogether."""
    fn = feature_fn or _candle_features(features)
    aligned = align_candles(frames, timeframe)
    config = market or MarketConfig()
    full = _run(aligned, aligned.time.size, timeframe, fn, external, config, None)
    env = _env(full.data, full.config)
    rng = np.random.default_rng(schedule_seed)
    schedule = rng.integers(0, env.n_actions, size=full.data.n_bars + 1)
    ref = _Reference(
        run=full,
        aligned=aligned,
        columns=observation_columns(env),
        schedule=schedule,
        observations=_decisions(_ActionSchedule(schedule), full.data, full.config),
        decisions=_decisions(agent, full.data, full.config) if agent is not None else None,
    )
    n = aligned.time.size
    chosen = list(cuts) if cuts is not None else default_cuts(n, full.warmup, n_cuts)
    report = AuditReport(cuts=chosen, bars=n, checked_decisions=agent is not None)
    report.covered = _coverage(ref.columns, external)
    with tempfile.TemporaryDirectory(prefix="nexlify-audit-") as tmp:
        for cut in chosen:
            if not full.warmup < cut <= n:
                raise DataError(f"look-ahead audit: cut {cut} is outside ({full.warmup}, {n}]")
            workdir = Path(tmp) / f"cut{cut}"
            workdir.mkdir()
            run = _run(aligned, cut, timeframe, fn, external, config, workdir)
            report.leaks += _audit_cut(ref, run, cut, agent)
    return report


def _audit_cut(ref: _Reference, run: _Run, cut: int, agent: GreedyActor | None) -> list[Leak]:
    """Leaks of one cut: features, observation rows under the schedule, decisions."""
    leaks = []
    where = _first_difference(ref.run.features[:cut], run.features)
    if where is not None:
        bar, pair, feat = where
        name = run.names[feat]
        kind = "external" if name.startswith("ext_") else "feature"
        leaks.append(Leak(cut, kind, bar, _ts(ref.aligned.time[bar]),
                          f"{ref.aligned.pairs[pair]} {name}"))  # fmt: skip
    rows = _decisions(_ActionSchedule(ref.schedule), run.data, run.config)
    leak = _row_leak(ref, cut, "observation", ref.observations, rows)
    if leak is not None:
        leaks.append(leak)
    if agent is not None and ref.decisions is not None:
        leak = _row_leak(
            ref, cut, "decision", ref.decisions, _decisions(agent, run.data, run.config)
        )
        if leak is not None:
            leaks.append(leak)
    return leaks


def _row_leak(
    ref: _Reference, cut: int, kind: str, full_rows: np.ndarray, cut_rows: np.ndarray
) -> Leak | None:
    steps = cut_rows.shape[0]
    where = _first_difference(full_rows[:steps], cut_rows)
    if where is None:
        return None
    step = where[0]
    bar = ref.run.warmup + ref.run.config.env.obs_window - 1 + step
    a, b = full_rows[step], cut_rows[step]
    differ = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
    first_of_kind: dict[str, str] = {}  # the first differing column of each kind, in order
    for c in differ:
        col_kind, label = ("decision", "action") if c == len(ref.columns) else ref.columns[c]
        first_of_kind.setdefault(col_kind, label)
    what = "; ".join(f"{col_kind}: {label}" for col_kind, label in first_of_kind.items())
    return Leak(cut, kind, bar, _ts(ref.aligned.time[bar]), what)


def _ts(seconds: int) -> str:
    return pd.Timestamp(int(seconds), unit="s", tz="UTC").isoformat()
