"""Choose the market a pipeline trains on: candle files, the local store, or synthetic."""

from __future__ import annotations

import logging
from pathlib import Path

from nexlify.data.enrichment import with_external_features
from nexlify.data.features import FeatureConfig, feature_config_for
from nexlify.data.market_data import MarketData, build_market_data, holdout_split
from nexlify.data.quality import (
    QualityPolicy,
    load_checked_pairs,
    parse_policy_overrides,
    quality_notes,
)
from nexlify.data.sources import synthetic_market
from nexlify.data.store import CandleStore, default_store_dir
from nexlify.errors import DataError
from nexlify.train.config import DataConfig

SYNTHETIC_WARNING = (
    "NO MARKET DATA: training on the built-in SYNTHETIC market. Results say nothing about real "
    "markets. Pass --data-dir with candle files (or download data into the store) for real data."
)


def quality_policy(config: DataConfig) -> QualityPolicy:
    """The data quality policy of ``config`` (defaults plus its FINDING=POLICY overrides)."""
    return QualityPolicy(
        actions=parse_policy_overrides(config.quality),
        max_fill_bars=config.quality_max_fill_bars,
    )


def run_features(config: DataConfig) -> FeatureConfig:
    """The feature set of a run: its timeframe's, with the long-memory and cross-pair features
    when asked."""
    return feature_config_for(config.timeframe, config.long_memory, config.cross_pair)


def checked_market_from_files(
    folder: str | Path, config: DataConfig, features: FeatureConfig | None = None
) -> MarketData:
    """Candle files of every pair, checked by the quality policy (DataError when one fails);
    ``features`` defaults to the run's (:func:`run_features`)."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist or is not a directory")
    frames, reports = load_checked_pairs(
        path, list(config.pairs), config.timeframe, quality_policy(config)
    )
    return build_market_data(
        frames,
        config.timeframe,
        source=f"files:{path}",
        extra_notes=quality_notes(reports),
        features=features or run_features(config),
    )


def _candle_market(config: DataConfig, log: logging.Logger, features: FeatureConfig) -> MarketData:
    if config.source in ("auto", "files") and config.data_dir is not None:
        return checked_market_from_files(config.data_dir, config, features)
    if config.source in ("auto", "store"):
        store = Path(config.store_dir) if config.store_dir else default_store_dir()
        folder = CandleStore(store).folder_with(config.pairs, config.timeframe)
        if folder is not None:
            market = checked_market_from_files(folder, config, features)
            log.info("using the local store: %s", folder)
            return market
        if config.source == "store":
            raise DataError(
                f"the store {store} has no exchange folder with all of {', '.join(config.pairs)} "
                f"at {config.timeframe}; download them first or use --data-dir"
            )
    return synthetic_market(
        config.pairs,
        config.timeframe,
        seed=config.synthetic_seed,
        days=config.synthetic_days,
        features=features,
    )


def external_folder(config: DataConfig) -> Path:
    """Where the external series' CSVs are: external_dir, else <store>/external."""
    if config.external_dir:
        return Path(config.external_dir)
    store = Path(config.store_dir) if config.store_dir else default_store_dir()
    return CandleStore(store).external_dir()


def load_training_market(
    config: DataConfig, log: logging.Logger, features: FeatureConfig | None = None
) -> MarketData:
    """The market for ``config``; synthetic only when nothing else is available.

    ``features``: the feature set (a saved model's, to rebuild exactly what it was trained on);
    default the run's own (:func:`run_features`).

    Candle files (``--data-dir`` or the store) pass the quality check first (a failing check
    raises DataError with the reason); external series, when asked for, are appended as
    features without look-ahead. The pipeline warns loudly about a synthetic market
    (``SYNTHETIC_WARNING``) in its log.
    """
    market = _candle_market(config, log, features or run_features(config))
    if config.external:
        folder = external_folder(config)
        market = with_external_features(
            market, config.external, folder, config.external_max_age_days
        )
        log.info("external features %s from %s", ", ".join(config.external), folder)
    return market


def split_market(
    market: MarketData, config: DataConfig
) -> tuple[MarketData, MarketData, MarketData | None]:
    """(train, validation, test or None): test = last test_days, validation = the days before."""
    return holdout_split(market, config.validation_days, config.test_days)
