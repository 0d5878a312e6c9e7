"""Training callbacks: early stopping on the validation score."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Stop when ``patience`` validations in a row fail to beat the best by more than min_delta.

    ``patience`` 0 never stops. The score is "higher is better" (the validation score).
    """

    patience: int
    min_delta: float = 0.0
    best: float = -math.inf
    bad_validations: int = 0

    def step(self, score: float) -> bool:
        """Record one validation score; True when training should stop."""
        if score > self.best + self.min_delta:
            self.best = score
            self.bad_validations = 0
            return False
        self.bad_validations += 1
        return self.patience > 0 and self.bad_validations >= self.patience
