"""Candle files: read, validate and align OHLCV candles.

A *candle frame* is the canonical in-memory form of one pair's candles: a pandas DataFrame whose
index is a UTC ``DatetimeIndex`` named ``date`` (bar OPEN time), with exactly the float64 columns
``open, high, low, close, volume``, strictly increasing and without duplicates.

Following freqtrade's data handlers (STYLE rule 11), the file backends only do raw I/O; one
validation function, :func:`_validate_candles`, turns any raw table into a candle frame and is
shared by :func:`read_candles` and :func:`candles_from_dataframe`. It is vectorised (files have
tens of thousands of rows) and reports the first offending row of the file, its timestamp, the
problem and how many rows share it, so a user can find and fix the file.

Alignment of several pairs on one time grid lives in :mod:`nexlify.data.align`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.errors import ConfigError, DataError

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""Columns of a candle frame, in order."""
DATE_COLUMNS: tuple[str, ...] = ("date", "timestamp", "time", "datetime", "open_time")
"""Accepted names of the bar-open-time column (case-insensitive), in order of preference."""
CANDLE_SUFFIXES: tuple[str, ...] = (".parquet", ".feather", ".csv", ".csv.gz")
"""File types :func:`find_candle_file` looks for, in order of preference."""

_PAIR_RE = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
NS_PER_SECOND = 1_000_000_000
# Timestamps outside these bounds are treated as unparsable (mostly epoch values in the wrong unit).
EARLIEST_CANDLE = pd.Timestamp("1970-01-01", tz="UTC")
LATEST_CANDLE = pd.Timestamp("2200-01-01", tz="UTC")
# Median epoch magnitude below which a file's integers are read in this unit.
EPOCH_UNITS: tuple[tuple[float, str, int], ...] = (
    (1e11, "seconds", NS_PER_SECOND),
    (1e14, "milliseconds", 1_000_000),
    (1e17, "microseconds", 1_000),
    (np.inf, "nanoseconds", 1),
)


def parse_pair(pair: str) -> tuple[str, str]:
    """``"BTC/USDT"`` -> ``("BTC", "USDT")``; ConfigError unless it is ccxt style BASE/QUOTE."""
    if not isinstance(pair, str) or not _PAIR_RE.match(pair):
        raise ConfigError(
            f"pair {pair!r} is not a ccxt-style pair: expected BASE/QUOTE in upper-case letters "
            "and digits, such as BTC/USDT"
        )
    base, quote = pair.split("/")
    return base, quote


def pair_to_stem(pair: str, timeframe: str) -> str:
    """File name stem of a pair's candles, as freqtrade names them: ``BTC_USDT-1h``."""
    base, quote = parse_pair(pair)
    timeframe_seconds(timeframe)
    return f"{base}_{quote}-{timeframe}"


def format_time_ns(ns: int) -> str:
    ts = pd.Timestamp(int(ns), unit="ns", tz="UTC")
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC" if ts.second else "%Y-%m-%d %H:%M UTC")


def count_noun(n: int | np.integer, noun: str) -> str:
    return f"{int(n)} {noun}{'' if n == 1 else 's'}"


def describe_cell(x: Any) -> str:
    """A table cell as the file wrote it, for messages."""
    if x is None or (isinstance(x, float) and np.isnan(x)) or x is pd.NA or x is pd.NaT:
        return "empty cell"
    return repr(x) if isinstance(x, str) else str(x)


def find_column(raw: pd.DataFrame, names: Sequence[str]) -> object | None:
    lowered: dict[str, object] = {}
    for col in raw.columns:
        lowered.setdefault(str(col).strip().lower(), col)
    return next((lowered[n] for n in names if n in lowered), None)


def with_date_column(raw: pd.DataFrame) -> tuple[pd.DataFrame, object | None]:
    """The table and the label of its date column, taking the index when it holds the dates."""
    col = find_column(raw, DATE_COLUMNS)
    if col is not None:
        return raw, col
    idx = raw.index
    if isinstance(idx, pd.DatetimeIndex) or str(idx.name).strip().lower() in DATE_COLUMNS:
        out = raw.reset_index(drop=True)
        out["__date__"] = idx  # positional assignment keeps the time zone
        return out, "__date__"
    return raw, None


def parse_dates(col: pd.Series) -> tuple[np.ndarray, np.ndarray, str]:
    """(ns since epoch int64, valid bool, how the values were read), all vectorised."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        idx = pd.DatetimeIndex(col)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        how = "datetime"
    else:
        numeric = col if pd.api.types.is_numeric_dtype(col.dtype) else None
        if numeric is None:
            coerced = pd.to_numeric(col, errors="coerce")
            if coerced.notna().sum() * 2 > col.notna().sum():
                numeric = coerced
        if numeric is not None:
            return _parse_epoch(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
        parsed = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
        idx = pd.DatetimeIndex(parsed)
        how = "ISO 8601"
    valid = np.asarray(idx.notna() & (idx >= EARLIEST_CANDLE) & (idx < LATEST_CANDLE), dtype=bool)
    ns = pd.DatetimeIndex(idx.where(valid)).as_unit("ns").asi8.copy()
    return ns, valid, how


def _parse_epoch(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    finite = np.isfinite(values)
    magnitude = float(np.median(np.abs(values[finite]))) if finite.any() else 0.0
    unit, per = next((u, p) for bound, u, p in EPOCH_UNITS if magnitude < bound)
    seconds = np.where(finite, values, 0.0) * (per / NS_PER_SECOND)
    valid = (
        finite & (seconds >= EARLIEST_CANDLE.timestamp()) & (seconds < LATEST_CANDLE.timestamp())
    )
    safe = np.where(valid, values, 0.0)
    if np.array_equal(safe, np.round(safe)):  # integer arithmetic keeps ms epochs exact
        ns = safe.astype(np.int64) * per
    else:
        ns = np.round(safe * per).astype(np.int64)
    return ns, valid, f"unix epoch {unit}"


_Check = tuple[str, np.ndarray, str]
"""(label, bad-row mask, description template of one row; see :func:`_describe_row`)."""


def _row_checks(
    raw: pd.DataFrame, cols: Mapping[str, object], step: int | None
) -> tuple[list[_Check], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every row-level check, vectorised. Returns (checks, ns, dates_ok, numeric columns)."""
    ns, ok, how = parse_dates(raw[cols["date"]])
    v = {
        k: pd.to_numeric(raw[cols[k]], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        for k in OHLCV_COLUMNS
    }
    o, h, lo, c = v["open"], v["high"], v["low"], v["close"]
    expected = "expected ISO 8601 such as 2021-05-01T00:00:00Z, or unix epoch s or ms"
    body = "(open {open}, close {close})"
    checks = [
        (
            "unparsable dates",
            ~ok,
            f"date {{raw_date}} is not a valid timestamp (read as {how}; {expected})",
        )
    ]
    checks += [
        (f"non-numeric {k}", ~np.isfinite(v[k]), f"{k} is not a finite number: {{raw_{k}}}")
        for k in OHLCV_COLUMNS
    ]
    checks += [
        (f"non-positive {k}", v[k] <= 0, f"{k} {{{k}}} is not positive") for k in OHLCV_COLUMNS[:4]
    ]
    checks += [
        ("negative volume", v["volume"] < 0, "volume {volume} is negative"),
        ("high below low", h < lo, "high {high} < low {low}"),
        ("high below open/close", h < np.maximum(o, c), "high {high} is below max" + body),
        ("low above open/close", lo > np.minimum(o, c), "low {low} is above min" + body),
    ]
    if ok.all():  # order checks only make sense once every date is known
        earlier = np.concatenate(([False], ns[1:] < ns[:-1]))
        dup = pd.Series(ns).duplicated().to_numpy()
        checks += [
            ("timestamps out of order", earlier, "time is earlier than the previous row's {prev}"),
            ("duplicate timestamps", dup, "duplicate timestamp (same as row {same})"),
        ]
        if step is not None:
            grid = f"not on the {step} s grid of the timeframe (multiples of {step} s since 1970)"
            checks.append(("timestamps off the grid", ns % (step * NS_PER_SECOND) != 0, grid))
    return checks, ns, ok, v


def _problem_report(
    source: str,
    checks: Sequence[_Check],
    raw: pd.DataFrame,
    cols: Mapping[str, object],
    ns: np.ndarray,
    ok: np.ndarray,
    v: Mapping[str, np.ndarray],
) -> str | None:
    """Message on the earliest offending row (then the other problems briefly), or None.

    Templates see numbers by column name, ``raw_<col>`` (the cell as written in the file),
    ``prev`` (previous row's time) and ``same`` (first row with the same time).
    """
    found = sorted((int(np.argmax(m)), k) for k, (_, m, _) in enumerate(checks) if m.any())
    if not found:
        return None
    i, k = found[0]
    what = checks[k][2].format(
        **{c: repr(float(x[i])) for c, x in v.items()},
        **{f"raw_{c}": describe_cell(raw[col].iloc[i]) for c, col in cols.items()},
        prev=format_time_ns(ns[i - 1]) if i > 0 and ok[i - 1] else "?",
        same=int(np.argmax(ns == ns[i])) + 1,
    )
    n = int(checks[k][1].sum())
    when = f" ({format_time_ns(ns[i])})" if ok[i] else ""
    msg = f"{source} row {i + 1}{when}: {what} ({count_noun(n, 'row')} with this problem)"
    also = [
        f"{checks[j][0]} ({count_noun(checks[j][1].sum(), 'row')}, first row {r + 1})"
        for r, j in found[1:]
    ]
    return msg + (". Also found: " + "; ".join(also) if also else "")


def resolve_columns(
    raw: pd.DataFrame, source: str
) -> tuple[pd.DataFrame, object, dict[str, object]]:
    """(table, date column, {ohlcv name: column}); DataError naming what is missing."""
    raw, date_col = with_date_column(raw)
    cols = {name: find_column(raw, (name,)) for name in OHLCV_COLUMNS}
    missing = [name for name, col in cols.items() if col is None]
    if date_col is None:
        missing.append(f"date (one of {', '.join(DATE_COLUMNS)})")
    if missing:
        found = ", ".join(str(c) for c in raw.columns) or "none"
        raise DataError(
            f"{source}: missing required column(s): {', '.join(missing)}; found columns: {found}"
        )
    return raw, date_col, cols


def _validate_candles(raw: pd.DataFrame, source: str, timeframe: str | None) -> pd.DataFrame:
    """Check a raw table of candles and return it as a candle frame (the one validation path)."""
    step = timeframe_seconds(timeframe) if timeframe is not None else None
    raw, date_col, cols = resolve_columns(raw, source)
    if len(raw) == 0:
        raise DataError(f"{source}: empty, no data rows")
    named = {"date": date_col, **cols}
    checks, ns, ok, values = _row_checks(raw, named, step)
    report = _problem_report(source, checks, raw, named, ns, ok, values)
    if report:
        raise DataError(report)
    return frame_from_ns(ns, np.stack([values[k] for k in OHLCV_COLUMNS], axis=1))


def frame_from_ns(ns: np.ndarray, ohlcv: np.ndarray) -> pd.DataFrame:
    index = pd.DatetimeIndex(ns.view("datetime64[ns]"), name="date").tz_localize("UTC")
    data = np.asarray(ohlcv, dtype=np.float64)
    return pd.DataFrame({k: data[:, j] for j, k in enumerate(OHLCV_COLUMNS)}, index=index)


def candle_frame(time: np.ndarray, ohlcv: np.ndarray) -> pd.DataFrame:
    """Candle frame from bar open times (int unix seconds [T]) and ``ohlcv`` [T, 5], unchecked."""
    return frame_from_ns(np.asarray(time, dtype=np.int64) * NS_PER_SECOND, ohlcv)


def candles_from_dataframe(
    df: pd.DataFrame, name: str = "<DataFrame>", timeframe: str | None = None
) -> pd.DataFrame:
    """Validate a user's DataFrame (dates as a column or as the index) into a candle frame.

    Same rules and messages as :func:`read_candles`; ``name`` stands for the file in messages.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    return _validate_candles(df, name, timeframe)


def read_raw_table(path: Path) -> pd.DataFrame:
    """Raw I/O only: the file's table as pandas reads it, without any checks."""
    lower = path.name.lower()
    try:
        if lower.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
        if lower.endswith(".parquet"):
            return pd.read_parquet(path)
        if lower.endswith(".feather"):
            return pd.read_feather(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file, no header and no data rows") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a candle file: {exc}") from exc
    raise DataError(f"{path}: unsupported file type; use one of {', '.join(CANDLE_SUFFIXES)}")


def read_candles(path: str | Path, timeframe: str | None = None) -> pd.DataFrame:
    """Read and validate a CSV (.csv, .csv.gz), Parquet or freqtrade feather candle file.

    The date column may be called date, timestamp, time, datetime or open_time (any case) and
    hold ISO 8601 strings (naive = UTC) or unix epoch seconds or milliseconds (unit detected per
    file by magnitude). Any defect raises DataError naming the file, the first bad row (1-based
    data row), its timestamp when known, the problem and how many rows have it. With
    ``timeframe``, timestamps off that timeframe's grid are an error too.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such candle file")
    return _validate_candles(read_raw_table(p), str(p), timeframe)


def _first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def candle_files(data_dir: str | Path, pair: str, timeframe: str) -> list[Path]:
    """The pair's ``timeframe`` candle file in ``data_dir`` itself (one), else one per exchange
    subfolder that has it (none, one or several)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist or is not a directory")
    names = [pair_to_stem(pair, timeframe) + s for s in CANDLE_SUFFIXES]
    direct = _first_existing(root, names)
    if direct is not None:
        return [direct]
    subfolders = (d for d in sorted(root.iterdir()) if d.is_dir())
    return [f for d in subfolders if (f := _first_existing(d, names)) is not None]


def find_candle_file(data_dir: str | Path, pair: str, timeframe: str) -> Path:
    """Path of a pair's candle file in ``data_dir`` or in exactly one exchange subfolder of it.

    Looks for ``<BASE>_<QUOTE>-<timeframe>`` with the suffixes of ``CANDLE_SUFFIXES`` (first found
    wins within a folder).
    """
    root = Path(data_dir)
    found = candle_files(root, pair, timeframe)
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(
            f"{pair} {timeframe}: candle files in several exchange folders of {root}: "
            f"{', '.join(str(f.relative_to(root)) for f in found)}; pick one exchange by passing "
            f"its folder as the data directory (e.g. {found[0].parent})"
        )
    names = [pair_to_stem(pair, timeframe) + s for s in CANDLE_SUFFIXES]
    entries = sorted(root.iterdir())
    listing = [e.name + ("/" if e.is_dir() else "") for e in entries[:10]]
    more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
    raise DataError(
        f"no candle file for {pair} {timeframe} in {root}: looked for {', '.join(names)} there "
        f"and in its exchange subfolders; the directory has: {', '.join(listing) or 'nothing'}"
        f"{more}. Download candles first (nexlify data download) or point to another directory"
    )


def load_pairs(
    data_dir: str | Path, pairs: Sequence[str], timeframe: str
) -> dict[str, pd.DataFrame]:
    """Find, read and validate each pair's candle file: ``{pair: candle frame}`` in given order."""
    if isinstance(pairs, str) or not pairs:
        raise ConfigError(f"pairs: {pairs!r} is invalid (give one or more pairs like BTC/USDT)")
    dupes = sorted({p for p in pairs if list(pairs).count(p) > 1})
    if dupes:
        raise ConfigError(f"pairs: {', '.join(dupes)} listed more than once")
    return {p: read_candles(find_candle_file(data_dir, p, timeframe), timeframe) for p in pairs}
