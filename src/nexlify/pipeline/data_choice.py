"""Choose the market a pipeline trains on: candle files, the local store, or synthetic."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nexlify.data.market_data import MarketData
from nexlify.data.sources import market_from_files, synthetic_market
from nexlify.errors import DataError
from nexlify.train.config import DataConfig

SYNTHETIC_WARNING = (
    "NO MARKET DATA: training on the built-in SYNTHETIC market. Results say nothing about real "
    "markets. Pass --data-dir with candle files (or download data into the store) for real data."
)


def default_store_dir() -> Path:
    """The local candle store: $NEXLIFY_DATA_DIR, else ~/.nexlify/data."""
    return Path(os.environ.get("NEXLIFY_DATA_DIR") or Path.home() / ".nexlify" / "data")


def _store_folder_with(store: Path, config: DataConfig) -> Path | None:
    """The first exchange folder of the store that holds every pair (sorted, so stable)."""
    if not store.is_dir():
        return None
    stems = [p.replace("/", "_") + f"-{config.timeframe}" for p in config.pairs]
    for folder in sorted(p for p in store.iterdir() if p.is_dir()):
        names = {f.name.split(".")[0] for f in folder.iterdir() if f.is_file()}
        if all(stem in names for stem in stems):
            return folder
    return None


def load_training_market(config: DataConfig, log: logging.Logger) -> MarketData:
    """The market for ``config``; synthetic only when nothing else is available.

    The pipeline warns loudly about a synthetic market (``SYNTHETIC_WARNING``) in its log.
    """
    if config.source in ("auto", "files") and config.data_dir is not None:
        return market_from_files(config.data_dir, config.pairs, config.timeframe)
    if config.source in ("auto", "store"):
        store = Path(config.store_dir) if config.store_dir else default_store_dir()
        folder = _store_folder_with(store, config)
        if folder is not None:
            market = market_from_files(folder, config.pairs, config.timeframe)
            log.info("using the local store: %s", folder)
            return market
        if config.source == "store":
            raise DataError(
                f"the store {store} has no exchange folder with all of {', '.join(config.pairs)} "
                f"at {config.timeframe}; download them first or use --data-dir"
            )
    return synthetic_market(
        config.pairs, config.timeframe, seed=config.synthetic_seed, days=config.synthetic_days
    )


def split_market(
    market: MarketData, config: DataConfig
) -> tuple[MarketData, MarketData, MarketData | None]:
    """(train, validation, test or None): test = last test_days, validation = the days before."""
    rest, test = (
        market.split_last_days(config.test_days) if config.test_days > 0 else (market, None)
    )
    train, validation = rest.split_last_days(config.validation_days)
    return train, validation, test
