"""Look-ahead audit: prove that nothing known at bar t depends on bars after t.

For each cut point c, the candles after c are removed and everything is recomputed from scratch:
the features, then (with a model) the observations and the model's greedy decisions bar by bar.
Every value for a bar before the cut must be identical to the full-data run; any difference is
a leak and is reported with the first bar, pair and feature (or decision) where it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from nexlify.config import MarketConfig
from nexlify.data.align import align_candles
from nexlify.data.features import compute_market_features
from nexlify.data.market_data import MarketData
from nexlify.errors import DataError
from nexlify.market.env import VecMarketEnv
from nexlify.train.trainer import GreedyActor

FeatureFn = Callable[[np.ndarray], tuple[np.ndarray, tuple[str, ...]]]
"""Computes features [T, P, F] (NaN during warm-up) and their names from ohlcv [T, P, 5]."""


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
    """Result of an audit: the cuts checked and every leak found (empty = clean)."""

    cuts: list[int]
    bars: int
    checked_decisions: bool
    leaks: list[Leak] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.leaks


def _market(
    time: np.ndarray, ohlcv: np.ndarray, pairs: tuple[str, ...], timeframe: str, fn: FeatureFn
) -> tuple[MarketData, int]:
    features, names = fn(ohlcv)
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


def _decisions(agent: GreedyActor, data: MarketData, config: MarketConfig) -> np.ndarray:
    """Rows [observation..., greedy action] for every bar of one run, the last bar included.

    Positions are not liquidated at the end (``close_at_end=False``), so the state at a cut's
    last bar is the same as at that bar of the full run and its decision can be compared too.
    """
    env_cfg = replace(config.env, episode_length=0, random_start=False, close_at_end=False)
    env = VecMarketEnv(data, replace(config, env=env_cfg), autoreset=False, copy_obs=True)
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


def _first_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, ...] | None:
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return None
    return tuple(int(i) for i in np.argwhere(~same)[0])


def default_cuts(n_bars: int, warmup: int, count: int) -> list[int]:
    """``count`` cut points spread evenly between the warm-up and the end."""
    lo = warmup + max(10, (n_bars - warmup) // (count + 1))
    return sorted({int(c) for c in np.linspace(lo, n_bars - 2, count)})


def audit_lookahead(
    frames: Mapping[str, pd.DataFrame],
    timeframe: str,
    *,
    cuts: Sequence[int] | None = None,
    n_cuts: int = 5,
    feature_fn: FeatureFn | None = None,
    agent: GreedyActor | None = None,
    market: MarketConfig | None = None,
) -> AuditReport:
    """Audit features (and, with ``agent``, decisions) at every cut (raw bar indices)."""
    fn = feature_fn or (lambda ohlcv: compute_market_features(ohlcv))
    aligned = align_candles(frames, timeframe)
    full_data, warmup = _market(aligned.time, aligned.ohlcv, aligned.pairs, timeframe, fn)
    full_features, _ = fn(aligned.ohlcv)
    n = aligned.time.size
    chosen = list(cuts) if cuts is not None else default_cuts(n, warmup, n_cuts)
    config = market or MarketConfig()
    full_decisions = _decisions(agent, full_data, config) if agent is not None else None
    report = AuditReport(cuts=chosen, bars=n, checked_decisions=agent is not None)
    for cut in chosen:
        if not warmup < cut <= n:
            raise DataError(f"look-ahead audit: cut {cut} is outside ({warmup}, {n}]")
        cut_features, names = fn(aligned.ohlcv[:cut])
        where = _first_difference(full_features[:cut], cut_features)
        if where is not None:
            bar, pair, feat = where
            report.leaks.append(Leak(cut, "feature", bar, _ts(aligned.time[bar]),
                                     f"{aligned.pairs[pair]} {names[feat]}"))  # fmt: skip
        if agent is None or full_decisions is None:
            continue
        cut_data, _ = _market(aligned.time[:cut], aligned.ohlcv[:cut], aligned.pairs, timeframe, fn)
        cut_decisions = _decisions(agent, cut_data, config)
        steps = cut_decisions.shape[0]
        where = _first_difference(full_decisions[:steps], cut_decisions)
        if where is not None:
            step, column = where
            bar = warmup + config.env.obs_window - 1 + step
            what = "action" if column == cut_decisions.shape[1] - 1 else f"observation[{column}]"
            report.leaks.append(Leak(cut, "decision", bar, _ts(aligned.time[bar]), what))
    return report


def _ts(seconds: int) -> str:
    return pd.Timestamp(int(seconds), unit="s", tz="UTC").isoformat()
