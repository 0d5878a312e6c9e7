"""Settings of the training-data augmentation (``train.augmentation``), one docstring per field.

Kept in the config layer (no pandas, no numpy) so that reading a run config stays light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nexlify.config import require


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the augmentations (0 turns one off); ``train.augmentation`` in a config."""

    price_jitter: float = 0.001
    """Std of the per-bar lognormal factor on OHLC."""
    time_shift_bars: int = 168
    """Most leading bars dropped per augmented copy."""
    volume_scale: float = 0.3
    """Std of the per-pair lognormal factor on volume."""
    regime_mix_prob: float = 0.5
    """Probability that an augmented copy splices bull and bear segments of the original."""
    segment_bars: int = 0
    """Bars per segment of regime mixing (0: the episode length, at least 168)."""

    def __post_init__(self) -> None:
        t = "train.augmentation"
        for name in ("price_jitter", "volume_scale"):
            v = getattr(self, name)
            require(_is_number(v) and v >= 0, t, name, v, "a number >= 0")
        v = self.regime_mix_prob
        require(_is_number(v) and 0 <= v <= 1, t, "regime_mix_prob", v, "in [0, 1]")
        for name in ("time_shift_bars", "segment_bars"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, t, name, v,
                    "an integer >= 0")  # fmt: skip


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
