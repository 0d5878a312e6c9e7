"""Validation folds: where each unit of a candidate trains and where it is scored.

With holdout validation a candidate is one unit; with walk-forward it is one unit per window
of the validation days, and its record is the mean over them (:func:`combine_folds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError
from nexlify.pipeline.data_choice import split_market
from nexlify.train.config import RunConfig


@dataclass(frozen=True)
class ValidationFold:
    """Where one unit of a candidate trains and where it is scored."""

    train: MarketData
    val: MarketData


def validation_folds(market: MarketData, config: RunConfig) -> list[ValidationFold]:
    """The folds every candidate (initial run or retraining iteration) is scored on.

    holdout: one fold, trained before the last ``validation_days`` and scored on them.
    walk-forward: the validation days are cut into ``validation_folds`` consecutive windows;
    fold k trains on every bar before its window less ``validation_embargo_bars`` (anchored)
    and is scored on its window, so each score is out of sample and the folds together cover
    several market periods instead of one.
    """
    pcfg, data = config.pipeline, config.data
    train, val, _ = split_market(market, data)
    if pcfg.validation == "holdout":
        return [ValidationFold(train, val)]
    dev_bars = train.n_bars + val.n_bars
    k, embargo = pcfg.validation_folds, pcfg.validation_embargo_bars
    episode = config.market.env.episode_length
    window = val.n_bars // k
    if window < episode:
        raise ConfigError(
            f"pipeline.validation_folds: {k} walk-forward windows of the {val.n_bars} validation "
            f"bars are {window} bars each, shorter than an episode ({episode} bars); use fewer "
            "folds or more data.validation_days"
        )
    folds = []
    for i in range(k):
        start = train.n_bars + i * window
        stop = dev_bars if i == k - 1 else start + window
        if start - embargo < episode:
            raise ConfigError(
                f"pipeline.validation_folds: walk-forward fold {i + 1} would train on "
                f"{max(start - embargo, 0)} bars, fewer than an episode ({episode})"
            )
        folds.append(ValidationFold(market.slice(0, start - embargo), market.slice(start, stop)))
    return folds


def combine_folds(outcomes: list[dict[str, Any]], folds: list[ValidationFold]) -> dict[str, Any]:
    """One candidate's record from its fold units: the mean score and metrics over the folds,
    the newest fold's model (trained on the most data) and each fold's own figures."""
    if len(outcomes) == 1:
        return outcomes[0]
    last = outcomes[-1]
    return {
        **last,
        **fold_means([o["val_score"] for o in outcomes], [o["val_metrics"] for o in outcomes]),
        "train_return": float(np.mean([o["train_return"] for o in outcomes])),
        "seconds": float(sum(o["seconds"] for o in outcomes)),
        "folds": [
            {
                "fold": i + 1,
                "train_end": fold.train.span()[1].isoformat(),
                "val_start": fold.val.span()[0].isoformat(),
                "val_end": fold.val.span()[1].isoformat(),
                "val_score": o["val_score"],
                "val_metrics": o["val_metrics"],
                "model_path": o["model_path"],
            }
            for i, (o, fold) in enumerate(zip(outcomes, folds, strict=True))
        ],
    }


def fold_means(scores: list[float], metrics: list[dict[str, float]]) -> dict[str, Any]:
    """``val_score`` and ``val_metrics`` averaged over folds (metrics every fold has)."""
    keys = [k for k in metrics[-1] if all(k in m for m in metrics)]
    return {
        "val_score": float(np.mean(scores)),
        "val_metrics": {k: float(np.mean([m[k] for m in metrics])) for k in keys},
    }


def fold_table(folds: list[ValidationFold]) -> list[dict[str, Any]]:
    return [
        {
            "fold": i + 1,
            "train_bars": f.train.n_bars,
            "train_end": f.train.span()[1].isoformat(),
            "val_start": f.val.span()[0].isoformat(),
            "val_end": f.val.span()[1].isoformat(),
            "val_bars": f.val.n_bars,
        }
        for i, f in enumerate(folds)
    ]


def fold_models(outcome: dict[str, Any]) -> list[str]:
    """The model of each fold of a candidate (one with holdout validation)."""
    return (
        [f["model_path"] for f in outcome["folds"]]
        if "folds" in outcome
        else [outcome["model_path"]]
    )
