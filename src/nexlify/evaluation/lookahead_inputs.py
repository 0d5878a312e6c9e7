"""The look-ahead audit's inputs besides candles, as they stood at a cut.

At a cut the audit rebuilds every input as a user would have had it at the last kept bar's close
(its decision time ``cut_s``), writes the truncated copies to a work folder, and runs the
product's own code on them:

- external daily series: a day's row exists once it was published, at the end of its day plus
  the provider's declared lag (``Provider.lag_hours``). This schedule is restated here on purpose,
  not taken from :mod:`nexlify.data.enrichment`: a join that forgets the lag (showing a value from
  its 00:00 stamp) or reads the next day then differs between the full and the cut run;
- strategy CSVs (lending utilisation, pool volume and depth): rows stamped at or before
  ``cut_s`` (a row is in force from its time stamp);
- venue candles (arbitrage): each venue's bars that opened at or before the last kept bar.

Simulated strategy inputs are not inputs: they are generated from the market itself and must
come out the same on the cut market up to the cut.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.config.strategies import StrategiesConfig
from nexlify.data.candles import find_candle_file, read_candles
from nexlify.data.enrichment import external_features
from nexlify.data.external import load_series, provider, save_series
from nexlify.errors import DataError
from nexlify.market.strategies.series import read_timed_csv

DAY = 86_400


@dataclass(frozen=True)
class ExternalInputs:
    """External daily series joined to the bars (``--external``, ``--external-dir``)."""

    names: tuple[str, ...]
    """Provider names (fear_greed, onchain, funding, orderflow, sentiment)."""
    folder: Path
    """Folder of the series' CSVs."""
    max_age_days: float = 3.0
    """Oldest value carried forward (as ``data.external_max_age_days``)."""


def published_at(days: pd.DatetimeIndex, lag_hours: float) -> np.ndarray:
    """Unix seconds at which each day's value is public: the day's end plus the declared lag."""
    start = pd.DatetimeIndex(days).as_unit("s").asi8
    return start + DAY + round(lag_hours * 3600)


def external_block(
    time: np.ndarray,
    bar_seconds: int,
    inputs: ExternalInputs,
    cut_s: int | None = None,
    workdir: Path | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """External features [T, 2E] and names for bars ``time``: from the full series
    (``cut_s`` None), or from the series as published by ``cut_s`` (copies in ``workdir``).

    A series with nothing published yet has no file to join; its bars read what the join promises
    for that case: 0, flagged missing.
    """
    folder = inputs.folder
    present = list(inputs.names)
    if cut_s is not None:
        if workdir is None:
            raise ValueError("external_block: a cut needs a work folder")
        folder = workdir / "external"
        folder.mkdir(parents=True, exist_ok=True)
        present = [n for n in inputs.names if _write_published(n, inputs.folder, folder, cut_s)]
    values, names, _ = external_features(time, bar_seconds, present, folder, inputs.max_age_days)
    columns: list[np.ndarray] = []
    out_names: list[str] = []
    for name in inputs.names:
        if name in present:
            i = names.index(f"ext_{name}")
            columns += [values[:, i], values[:, i + 1]]
        else:
            columns += [np.zeros(len(time)), np.ones(len(time))]
        out_names += [f"ext_{name}", f"ext_{name}_missing"]
    block = np.stack(columns, axis=1) if columns else np.empty((len(time), 0))
    return block.astype(np.float32), tuple(out_names)


def _write_published(name: str, source: Path, target: Path, cut_s: int) -> bool:
    """Copy the rows of series ``name`` published by ``cut_s``; False when there are none."""
    series = load_series(name, source)
    known = published_at(pd.DatetimeIndex(series.index), provider(name).lag_hours)
    kept = series[known <= cut_s]
    if kept.empty:
        return False
    save_series(name, kept, target)
    return True


def truncated_strategies(
    strategies: StrategiesConfig,
    cut_s: int,
    last_open_s: int,
    pairs: tuple[str, ...],
    timeframe: str,
    workdir: Path,
) -> StrategiesConfig:
    """``strategies`` with every file input replaced by its copy as it stood at ``cut_s``."""
    lending, liquidity, arbitrage = strategies.lending, strategies.liquidity, strategies.arbitrage
    if strategies.uses("lending") and lending.utilization_source == "csv":
        path = _timed_csv_until(
            str(lending.utilization_csv), ("utilization",), "strategies.lending.utilization_csv",
            cut_s, workdir / "utilization.csv",
        )  # fmt: skip
        lending = replace(lending, utilization_csv=path)
    if strategies.uses("liquidity") and liquidity.pool_csv:
        path = _timed_csv_until(
            liquidity.pool_csv, ("volume_usd", "depth_2pct_usd"), "strategies.liquidity.pool_csv",
            cut_s, workdir / "pool.csv",
        )  # fmt: skip
        liquidity = replace(liquidity, pool_csv=path)
    if strategies.uses("arbitrage") and arbitrage.venues:
        if not arbitrage.primary_dir:
            raise DataError(
                "look-ahead audit: strategies.arbitrage.primary_dir is needed to cut the venues' "
                "candles (--arb-primary-dir DIR, the folder of the audited candles)"
            )
        primary = _candles_until(arbitrage.primary_dir, pairs, timeframe, last_open_s,
                                 workdir / "venue0")  # fmt: skip
        venues = tuple(
            f"{name}={_candles_until(folder, pairs, timeframe, last_open_s, workdir / f'venue{i}')}"
            for i, (name, folder) in enumerate(arbitrage.venue_folders(), start=1)
        )
        arbitrage = replace(arbitrage, primary_dir=primary, venues=venues)
    return replace(strategies, lending=lending, liquidity=liquidity, arbitrage=arbitrage)


def _timed_csv_until(
    path: str, columns: tuple[str, ...], what: str, cut_s: int, target: Path
) -> str:
    table = read_timed_csv(path, columns, what)
    kept = table[table["t"] <= cut_s]
    if kept.empty:
        raise DataError(
            f"look-ahead audit: {what} {path} has no row at or before "
            f"{pd.Timestamp(cut_s, unit='s', tz='UTC')}; pick later cuts or a file starting earlier"
        )
    kept.rename(columns={"t": "timestamp"}).to_csv(target, index=False)
    return str(target)


def _candles_until(
    folder: str, pairs: tuple[str, ...], timeframe: str, last_open_s: int, target: Path
) -> str:
    target.mkdir(parents=True, exist_ok=True)
    last = pd.Timestamp(last_open_s, unit="s", tz="UTC")
    for pair in pairs:
        path = find_candle_file(folder, pair, timeframe)
        frame = read_candles(path, timeframe)
        kept = frame[pd.DatetimeIndex(frame.index).tz_convert("UTC") <= last]
        out = kept[["open", "high", "low", "close", "volume"]].copy()
        out.insert(0, "date", pd.DatetimeIndex(kept.index).strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.to_csv(target / f"{path.name.split('.')[0]}.csv", index=False)
    return str(target)
