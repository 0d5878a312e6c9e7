"""What market each round of training sees: curriculum phases and augmentation.

Curriculum (fresh runs only; a retraining iteration starts in the last phase), by the run's
progress in transitions, with the boundaries of ``TrainConfig.curriculum_phases``:

1. calm markets and small positions: the third of the training segments with the lowest realised
   volatility, ``max_position`` times ``curriculum_position_scale``, only the return features
   (``ret_*``; the others read 0);
2. medium volatility: the middle third of the segments, full positions, return features only;
3. high volatility with all features: the most volatile third;
4. all regimes plus adversarial stress windows: the whole training history followed by its most
   volatile fifth of segments with log-price moves amplified 1.5x (crashes deeper, rallies
   steeper).

Segments are ``max(episode_length, 168)`` bars; a phase market is spliced with
:func:`nexlify.data.augment.splice_segments` (continuous prices, features recomputed). A phase
too short for one episode falls back to the whole history. Augmentation, when on, draws a new
augmented copy of the phase market every round (one round = one episode in every env).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from nexlify.config import MarketConfig
from nexlify.data.augment import AugmentConfig, augment_market, splice_segments, with_candles
from nexlify.data.features import feature_warmup
from nexlify.data.market_data import CLOSE, OPEN, MarketData
from nexlify.errors import DataError

STRESS_AMPLIFICATION = 1.5
"""Factor on log-price moves inside the stress windows of phase 4."""


def _segments(data: MarketData, length: int) -> list[tuple[int, int]]:
    starts = range(0, data.n_bars - length + 1, length)
    return [(s, s + length) for s in starts]


def _volatility(data: MarketData, segments: list[tuple[int, int]]) -> np.ndarray:
    logc = np.log(data.prices[:, :, CLOSE].astype(np.float64))
    return np.array([np.diff(logc[a:b], axis=0).std(axis=0).mean() for a, b in segments])


def _amplify(prices: np.ndarray, factor: float) -> np.ndarray:
    # p' = p0 * (p / p0) ** factor: monotone, so high >= open/close >= low still holds.
    p0 = prices[0, :, OPEN][None, :, None]
    return p0 * (prices / p0) ** factor


class TrainingMarkets:
    """Hands the trainer the market (data and config) for each round."""

    def __init__(
        self,
        data: MarketData,
        market: MarketConfig,
        *,
        curriculum: bool,
        phases: tuple[float, ...],
        position_scale: float,
        augment: AugmentConfig | None,
        seed: int,
        log: logging.Logger | None = None,
    ) -> None:
        self.data = data
        self.market = market
        self.curriculum = curriculum
        self.phases = tuple(phases)
        self.position_scale = position_scale
        self.augment = augment
        self.rng = np.random.default_rng([seed, 23])
        self.log = log or logging.getLogger("nexlify.train")
        self._phase_markets: dict[int, MarketData] = {}
        self.min_bars = market.env.obs_window + market.env.episode_length + 2
        self._warn_short_history()

    def _warn_short_history(self) -> None:
        """Say once when recomputed features cannot fit: every augmented copy and phase market
        loses the feature warm-up again (200 days with long-memory features), and a market too
        short for it falls back to the unchanged history."""
        if not self.changes_between_rounds:
            return
        warmup = feature_warmup(self.data.feature_config)
        if self.data.n_bars < warmup + self.min_bars:
            self.log.warning(
                "training data has %d bars; recomputed features drop a %d-bar warm-up and an "
                "episode needs %d: %s fall back to the unchanged history (give a longer history "
                "or a coarser timeframe)", self.data.n_bars, warmup, self.min_bars,
                "augmentation and curriculum phases" if self.curriculum else "augmentation",
            )  # fmt: skip

    @property
    def changes_between_rounds(self) -> bool:
        """Whether the market may change from one round to the next."""
        return self.curriculum or self.augment is not None

    def phase_at(self, progress: float) -> int:
        """Curriculum phase 1..4 at ``progress`` (4 when the curriculum is off)."""
        if not self.curriculum:
            return 4
        return 1 + sum(progress >= b for b in self.phases)

    def market_for(self, progress: float) -> tuple[MarketData, MarketConfig, int]:
        """(data, market config, phase) of the round starting at ``progress``."""
        phase = self.phase_at(progress)
        data = self._phase_market(phase)
        market = self.market
        if phase == 1:
            risk = market.risk
            market = replace(
                market, risk=replace(risk, max_position=risk.max_position * self.position_scale)
            )
        if self.augment is not None:
            try:
                augmented = augment_market(data, self.augment, self.rng)
                if augmented.n_bars >= self.min_bars:
                    data = augmented
            except DataError as exc:
                self.log.debug("augmentation skipped: %s", exc)
        return data, market, phase

    def _phase_market(self, phase: int) -> MarketData:
        if phase == 4 and not self.curriculum:
            return self.data
        if phase not in self._phase_markets:
            self._phase_markets[phase] = self._build_phase(phase)
        return self._phase_markets[phase]

    def _build_phase(self, phase: int) -> MarketData:
        data = self.data
        length = max(self.market.env.episode_length, 168)
        segments = _segments(data, length)
        if len(segments) < 3:
            return data
        vol = _volatility(data, segments)
        order = np.argsort(vol, kind="stable")
        third = len(segments) // 3
        prices, volume = data.prices.astype(np.float64), data.volume.astype(np.float64)
        if phase in (1, 2, 3):
            picked = {1: order[:third], 2: order[third : 2 * third], 3: order[2 * third :]}[phase]
            chosen = [segments[k] for k in sorted(picked)]
            new_p, new_v = splice_segments(prices, volume, chosen)
        else:
            stress = [segments[k] for k in sorted(order[-max(1, len(segments) // 5) :])]
            stress_p, stress_v = splice_segments(prices, volume, stress)
            stress_p = _amplify(stress_p, STRESS_AMPLIFICATION)
            stress_p = stress_p * (prices[-1, :, CLOSE] / stress_p[0, :, OPEN])[None, :, None]
            new_p, new_v = np.concatenate([prices, stress_p]), np.concatenate([volume, stress_v])
        base = data if new_p.shape[0] <= data.n_bars else _extend_time(data, new_p.shape[0])
        try:
            built = with_candles(base.slice(0, new_p.shape[0]), new_p, new_v)
        except DataError:
            return data
        if built.n_bars < self.min_bars:
            self.log.debug("curriculum phase %d too short (%d bars); whole history", phase,
                           built.n_bars)  # fmt: skip
            return data
        if phase in (1, 2):
            keep = np.array([name.startswith("ret_") for name in built.feature_names])
            features = built.features.copy()
            features[:, :, ~keep] = 0.0
            built = replace(built, features=features)
        return built


def _extend_time(data: MarketData, n_bars: int) -> MarketData:
    """``data`` with its bar times continued on the same grid to ``n_bars`` (prices repeated)."""
    extra = n_bars - data.n_bars
    step = data.bar_seconds
    time = np.concatenate([data.time, data.time[-1] + step * np.arange(1, extra + 1)])

    def grow(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.repeat(a[-1:], extra, axis=0)])

    return replace(
        data, time=time.astype(np.int64), prices=grow(data.prices), volume=grow(data.volume),
        features=grow(data.features), filled=grow(data.filled),
    )  # fmt: skip
