"""Per-bar inputs of the strategies, built once per env from config, files or a seeded simulation.

- Lending utilisation: constant, a CSV (``timestamp,utilization``; the value in force at each bar's
  open time, "as of"), or simulated: a mean-reverting AR(1) in logit space around the configured
  utilisation. The supply rate of every bar follows from the kinked curve.
- Pool volume and depth (Uniswap V3): the candles' quote volume times ``volume_ratio`` and a fixed
  ``depth_2pct_usd``, or a CSV (``timestamp`` plus ``volume_usd`` and/or ``depth_2pct_usd``): a
  row's volume is spread evenly over the bars until the next row; depth is taken as of.
- Venue premiums (arbitrage): other venues' candles for the same pairs, matched to the bars by
  open time: ``premium = venue price / primary price - 1`` at the open and the close, NaN where
  either venue lacks the bar. The premium is applied to the env's own prices, so augmented
  training data keeps real spreads. Without venue files the premiums are simulated (AR(1) with
  rare dislocations) and every report says so.

Simulations are seeded from the data's first bar time and drawn in time order, so the same data
gives the same series in every env, run and evaluation, and a market cut after bar t gives the
same series up to t (nothing at t depends on how many bars follow; the look-ahead audit checks).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.config.strategies import ArbitrageConfig, LendingConfig, LiquidityConfig
from nexlify.data.candles import find_candle_file, read_candles
from nexlify.data.market_data import CLOSE, MarketData
from nexlify.errors import ConfigError, DataError
from nexlify.market.strategies import columns as SC
from nexlify.market.strategies.rates import supply_rate
from nexlify.market.strategies.uniswap_v3 import pool_liquidity_from_depth

_TIME_COLUMNS = ("timestamp", "date", "time", "datetime")


def _series_seed(data: MarketData, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(data.time[0]) % (2**31), salt])


def _box_muller(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normals from two arrays of uniforms in [0, 1)."""
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def read_timed_csv(path: str | Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """A CSV with a time column and at least one of ``columns``, sorted, times in unix seconds.

    Raises DataError naming the file, the column and the first bad row.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: {p} does not exist or is not a file")
    try:
        frame = pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise DataError(f"{what}: cannot read {p} as CSV ({exc})") from None
    lower = {c.lower().strip(): c for c in frame.columns}
    time_col = next((lower[c] for c in _TIME_COLUMNS if c in lower), None)
    if time_col is None:
        raise DataError(f"{what}: {p} has no time column (one of {', '.join(_TIME_COLUMNS)})")
    present = [c for c in columns if c in lower]
    if not present:
        raise DataError(f"{what}: {p} needs a column named {' or '.join(columns)}")
    if len(frame) == 0:
        raise DataError(f"{what}: {p} has no rows")
    raw = frame[time_col]
    if pd.api.types.is_numeric_dtype(raw):
        seconds = raw.to_numpy(dtype=np.float64)
        seconds = np.where(seconds > 1e11, seconds / 1000.0, seconds)  # milliseconds
        times = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True))
    else:
        times = pd.DatetimeIndex(pd.to_datetime(raw, utc=True, errors="coerce"))
    bad = np.flatnonzero(pd.isna(times))
    if bad.size:
        raise DataError(f"{what}: {p} row {bad[0] + 1}: unreadable time {raw.iloc[bad[0]]!r}")
    out = pd.DataFrame({"t": pd.DatetimeIndex(times).as_unit("s").asi8})
    for c in present:
        values = pd.to_numeric(frame[lower[c]], errors="coerce").to_numpy(dtype=np.float64)
        nonfinite = np.flatnonzero(~np.isfinite(values))
        if nonfinite.size:
            row = nonfinite[0]
            raise DataError(
                f"{what}: {p} row {row + 1}: {c} is not a number ({frame[lower[c]].iloc[row]!r})"
            )
        out[c] = values
    out = out.sort_values("t", kind="stable")
    if out["t"].duplicated().any():
        dup = int(out["t"][out["t"].duplicated()].iloc[0])
        raise DataError(f"{what}: {p} has two rows for {pd.Timestamp(dup, unit='s', tz='UTC')}")
    return out.reset_index(drop=True)


def _as_of(table: pd.DataFrame, column: str, time: np.ndarray) -> tuple[np.ndarray, int]:
    """Value in force at each bar time (the last row at or before it); (values, bars before the
    first row, which take the first value)."""
    t = table["t"].to_numpy()
    idx = np.searchsorted(t, time, side="right") - 1
    before = int((idx < 0).sum())
    return table[column].to_numpy()[np.maximum(idx, 0)], before


# ---- lending ---------------------------------------------------------------------------------
def utilization_series(data: MarketData, config: LendingConfig) -> tuple[np.ndarray, list[str]]:
    """Pool utilisation at every bar, float64 [T] in [0, 1], and notes on where it came from."""
    T = data.n_bars
    if config.utilization_source == "constant":
        return np.full(T, config.utilization), [
            f"lending: constant utilisation {config.utilization:.0%}"
        ]
    if config.utilization_source == "csv":
        table = read_timed_csv(
            str(config.utilization_csv), ("utilization",), "strategies.lending.utilization_csv"
        )
        values = table["utilization"].to_numpy()
        if values.min() < 0 or values.max() > 1:
            row = int(np.argmax((values < 0) | (values > 1)))
            raise DataError(
                f"strategies.lending.utilization_csv: {config.utilization_csv} "
                f"utilization {float(values[row])!r} at row {row + 1} is outside [0, 1] "
                "(write 0.85, not 85)"
            )
        util, before = _as_of(table, "utilization", data.time)
        notes = [f"lending: utilisation from {config.utilization_csv} ({len(table)} rows)"]
        if before:
            notes.append(f"lending: {before} bars before the CSV's first row use its first value")
        return util.astype(np.float64), notes
    rng = _series_seed(data, 11)
    bar_days = data.bar_seconds / 86_400.0
    phi = 0.5 ** (bar_days / config.utilization_halflife_days)
    u0 = min(max(config.utilization, 1e-4), 1 - 1e-4)
    mu = math.log(u0 / (1 - u0))
    sigma = config.utilization_volatility * math.sqrt(bar_days)
    shocks = rng.normal(0.0, sigma, size=T)
    z = np.empty(T)
    z[0] = mu
    for i in range(1, T):
        z[i] = mu + phi * (z[i - 1] - mu) + shocks[i]
    return 1.0 / (1.0 + np.exp(-z)), [
        f"lending: SIMULATED utilisation (mean {config.utilization:.0%}, half-life "
        f"{config.utilization_halflife_days:g} days)"
    ]


def lending_rates(
    data: MarketData, config: LendingConfig
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(utilisation [T], supply rate per year [T], notes)."""
    util, notes = utilization_series(data, config)
    rate = np.array(
        [
            supply_rate(
                u,
                config.base_rate,
                config.slope1,
                config.slope2,
                config.optimal_utilization,
                config.reserve_factor,
            )
            for u in util
        ]
    )
    return util, rate, notes


# ---- Uniswap V3 pool ---------------------------------------------------------------------------
def pool_series(
    data: MarketData, pair: int, config: LiquidityConfig
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(pool volume in quote per bar [T], pool active liquidity L per bar [T], notes)."""
    close = data.prices[:, pair, CLOSE].astype(np.float64)
    volume = data.volume[:, pair].astype(np.float64) * close * config.volume_ratio
    depth = np.full(data.n_bars, config.depth_2pct_usd)
    name = data.pairs[pair]
    notes = [
        f"liquidity: pool volume = {config.volume_ratio:g} x {name} candle volume, depth "
        f"{config.depth_2pct_usd:,.0f} quote per 2%"
    ]
    if config.pool_csv:
        table = read_timed_csv(
            config.pool_csv, ("volume_usd", "depth_2pct_usd"), "strategies.liquidity.pool_csv"
        )
        notes = [f"liquidity: pool data from {config.pool_csv} ({len(table)} rows)"]
        if "volume_usd" in table:
            t = table["t"].to_numpy()
            period = np.diff(t, append=t[-1] + (t[-1] - t[-2] if len(t) > 1 else data.bar_seconds))
            per_bar = table["volume_usd"].to_numpy() * data.bar_seconds / period
            idx = np.searchsorted(t, data.time, side="right") - 1
            inside = (idx >= 0) & (data.time < t[-1] + period[-1])
            volume = np.where(inside, per_bar[np.maximum(idx, 0)], 0.0)
            if not inside.all():
                notes.append(
                    f"liquidity: {int((~inside).sum())} bars outside the CSV's span "
                    "have no pool volume (no fees)"
                )
        if "depth_2pct_usd" in table:
            depth, _ = _as_of(table, "depth_2pct_usd", data.time)
            if (depth <= 0).any():
                raise DataError(
                    f"strategies.liquidity.pool_csv: {config.pool_csv} has a depth_2pct_usd <= 0"
                )
    pool_l = np.array([pool_liquidity_from_depth(d, c) for d, c in zip(depth, close, strict=True)])
    return volume, pool_l, notes


# ---- venues ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VenueSpreads:
    """Premiums of every venue over the primary at each bar: [T, P, V, 2] (open, close)."""

    names: tuple[str, ...]
    """Venue names, primary first."""
    premiums: np.ndarray
    """float64 [T, P, V, 2]; venue 0 is 0; NaN where a venue lacks the bar."""
    simulated: bool
    """True when no venue files were given and the spreads are simulated."""
    notes: tuple[str, ...]
    """Where the spreads came from, coverage."""


@functools.lru_cache(maxsize=64)
def _venue_candles(path: str, mtime: float, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
    frame = read_candles(path, timeframe)
    times = pd.DatetimeIndex(frame.index).tz_convert("UTC").as_unit("s").asi8.astype(np.int64)
    prices = frame[["open", "close"]].to_numpy(dtype=np.float64)
    prices.setflags(write=False)
    return times, prices


def _load_venue(folder: str, pair: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
    path = find_candle_file(folder, pair, timeframe)
    return _venue_candles(str(path), path.stat().st_mtime, timeframe)


def _on_bars(times: np.ndarray, values: np.ndarray, bars: np.ndarray) -> np.ndarray:
    """Rows of ``values`` at bar times ``bars`` (NaN where the venue has no such bar)."""
    idx = np.searchsorted(times, bars)
    idx_c = np.minimum(idx, len(times) - 1)
    hit = times[idx_c] == bars
    out = np.full((len(bars), values.shape[1]), np.nan)
    out[hit] = values[idx_c[hit]]
    return out


def primary_folder(data: MarketData, config: ArbitrageConfig) -> str:
    """The primary venue's candle folder: ``primary_dir``, else the folder the data came from."""
    if config.primary_dir:
        return config.primary_dir
    if data.source.startswith("files:"):
        return data.source[len("files:") :]
    raise ConfigError(
        f"strategies.arbitrage.primary_dir: not set and the market ({data.source}) was not read "
        "from candle files; set --arb-primary-dir to the folder of the training venue's candles "
        "(needed to measure the other venues' premiums)"
    )


def venue_spreads(data: MarketData, config: ArbitrageConfig) -> VenueSpreads:
    """Premiums from the configured venues' candles, or simulated ones (see module docstring)."""
    T, P = data.n_bars, data.n_pairs
    if not config.venues:
        return simulated_spreads(data, config)
    primary = primary_folder(data, config)
    folders = config.venue_folders()
    V = 1 + len(folders)
    prem = np.full((T, P, V, 2), np.nan)
    prem[:, :, 0, :] = 0.0
    notes = [
        f"arbitrage: venues primary={primary} "
        + " ".join(f"{name}={folder}" for name, folder in folders)
    ]
    for p, pair in enumerate(data.pairs):
        base = _on_bars(*_load_venue(primary, pair, data.timeframe), data.time)
        for v, (name, folder) in enumerate(folders, start=1):
            other = _on_bars(*_load_venue(folder, pair, data.timeframe), data.time)
            prem[:, p, v, :] = other / base - 1.0
            covered = int(np.isfinite(prem[:, p, v, 0]).sum())
            if covered == 0:  # a warning, not an error: curriculum and augmented markets
                start, end = data.span()  # reuse early timestamps a venue may not cover
                notes.append(
                    f"arbitrage: WARNING {name} ({folder}) and the primary venue have no bar of "
                    f"{pair} in common within {start} .. {end}: no arbitrage on {pair} here; "
                    "pick venues whose candles overlap the training data"
                )
            elif covered < T:
                notes.append(
                    f"arbitrage: {name} {pair}: {covered}/{T} bars on both venues "
                    "(no arbitrage on the others)"
                )
    return VenueSpreads(("primary", *(n for n, _ in folders)), prem, False, tuple(notes))


def simulated_spreads(data: MarketData, config: ArbitrageConfig) -> VenueSpreads:
    """AR(1) premiums with rare dislocations, two sub-steps per bar (open, close)."""
    T, P, V = data.n_bars, data.n_pairs, 1 + config.simulated_venues
    rng = _series_seed(data, 29)
    half_bar_hours = data.bar_seconds / 7200.0
    phi = 0.5 ** (half_bar_hours / config.spread_halflife_hours)
    scale = config.spread_std * math.sqrt(1.0 - phi * phi)
    start = rng.normal(0.0, config.spread_std, size=(P, V - 1))
    # One time-major block of uniforms: a shorter market draws a prefix of a longer one's
    u = rng.random(size=(2 * T, P, V - 1, 5))
    shocks = scale * _box_muller(u[..., 0], u[..., 1])
    jumps = u[..., 4] < config.spread_jump_prob / 2.0
    shocks += np.where(jumps, config.spread_jump_std * _box_muller(u[..., 2], u[..., 3]), 0.0)
    x = np.empty_like(shocks)
    x[0] = start
    for i in range(1, 2 * T):
        x[i] = phi * x[i - 1] + shocks[i]
    prem = np.zeros((T, P, V, 2))
    prem[:, :, 1:, 0] = x[0::2]
    prem[:, :, 1:, 1] = x[1::2]
    names = ("primary", *(f"simulated{v}" for v in range(1, V)))
    note = (
        f"arbitrage: SIMULATED venue spreads ({V - 1} venue(s), std {config.spread_std:.4%}, "
        f"half-life {config.spread_halflife_hours:g} h, dislocations p={config.spread_jump_prob:g}"
        "/bar); give --arb-venue NAME=DIR for real spreads"
    )
    return VenueSpreads(names, prem, True, (note,))


def strategy_series(
    data: MarketData, lending: LendingConfig | None, liquidity: LiquidityConfig | None, lp_pair: int
) -> tuple[np.ndarray, list[str]]:
    """ser [T, N_SER] for the kernel (zeros for strategies that are off), and notes."""
    ser = np.zeros((data.n_bars, SC.N_SER))
    notes: list[str] = []
    if lending is not None:
        util, rate, more = lending_rates(data, lending)
        ser[:, SC.SER_UTIL] = util
        ser[:, SC.SER_SUPPLY_RATE] = rate
        notes += more
    if liquidity is not None:
        volume, pool_l, more = pool_series(data, lp_pair, liquidity)
        ser[:, SC.SER_POOL_VOLUME] = volume
        ser[:, SC.SER_POOL_L] = pool_l
        notes += more
    return ser, notes


__all__ = [
    "VenueSpreads",
    "lending_rates",
    "pool_series",
    "primary_folder",
    "read_timed_csv",
    "simulated_spreads",
    "strategy_series",
    "utilization_series",
    "venue_spreads",
]
