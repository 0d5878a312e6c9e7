"""Import the candle files users already have: generic CSV, freqtrade, CryptoDataDownload.

Formats (detected from the content; ``fmt`` forces one):

=====================  ===================================================================
format                 what it is, and how it is normalised
=====================  ===================================================================
csv                    ``date,open,high,low,close,volume`` (any date column name that
                       :mod:`nexlify.data.candles` accepts); read as written, not sorted
freqtrade-json         freqtrade's ``json``/``jsongz`` data format, ``<PAIR>-<tf>.json`` or
                       ``.json.gz``: an array of ``[ms, open, high, low, close, volume]``
                       rows (objects with those keys are accepted too)
feather, parquet       freqtrade's ``feather`` format and Parquet: a table with the columns
                       of ``csv``
cryptodatadownload     a title line (``https://www.CryptoDataDownload.com``) before the
                       header, rows newest-first, ``unix`` (or ``Unix Timestamp``) in seconds
                       or milliseconds (mixed files happen), ``date`` text, ``symbol``,
                       open/high/low/close and ``Volume <BASE>``, ``Volume <QUOTE>``.
                       Normalised by skipping the title line, taking ``unix`` as the time
                       (the ``date`` text is ignored), sorting the rows oldest-first, and
                       taking the BASE volume as ``volume`` (base/quote from the symbol, or
                       the pair given)
=====================  ===================================================================

A file's quote volume (``Volume <QUOTE>``, ``quote_volume``...) is kept as ``quote_volume``
so that the quality check can find rows whose ``volume`` holds quote units (``volume_units``).

Normalising only renames, reorders and picks columns; every table then goes through the one
quality check (:func:`nexlify.data.quality.check_table`, which reports and, by policy,
repairs a seconds/milliseconds mix as ``ms_seconds``) and the cleaned candles through the one
validation (:func:`nexlify.data.candles.candles_from_dataframe`) before they are stored.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.config import TIMEFRAMES
from nexlify.data.candles import (
    OHLCV_COLUMNS,
    candles_from_dataframe,
    describe_cell,
    parse_dates,
    parse_pair,
    read_raw_table,
    with_date_column,
)
from nexlify.data.quality import QualityPolicy, SourceReport, check_table
from nexlify.data.quality_findings import epoch_units
from nexlify.data.store import parse_stem
from nexlify.errors import ConfigError, DataError

FORMATS: tuple[str, ...] = ("csv", "cryptodatadownload", "freqtrade-json", "feather", "parquet")
"""Import formats, as ``nexlify data import --format`` names them."""
_CDD_TIME_COLUMNS = ("unix", "unix timestamp")
_SNIFF_BYTES = 4096
_DETECTED_BY = {
    "feather": "its .feather name",
    "parquet": "its .parquet name",
    "freqtrade-json": "its first character, [ or {",
    "cryptodatadownload": "a 'unix' column in its first two lines",
    "csv": "no sign of another format",
}
_QUOTE_VOLUME_NAMES = ("quote_volume", "quote volume", "quote_asset_volume", "quote asset volume")
_COMMON_QUOTES = ("USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "EUR", "GBP", "JPY")
"""Quote currencies a ``Volume <X>`` column is taken as the quote volume for, when the pair
is not known (a ``Volume BTC`` column beside ``volume`` is the base volume again, not quote)."""


@dataclass(frozen=True)
class ImportedTable:
    """A file's candles normalised to the columns date, open, high, low, close, volume."""

    raw: pd.DataFrame
    """Unchecked rows; ``date`` as the file wrote it (text, epoch numbers or datetimes)."""
    format: str
    """One of FORMATS."""
    pair: str | None
    """Pair the file names: the CryptoDataDownload symbol, else a ``BASE_QUOTE-tf`` file name."""
    timeframe: str | None
    """Timeframe of a ``BASE_QUOTE-tf`` file name."""
    notes: tuple[str, ...]
    """What the normalisation did."""


@dataclass(frozen=True)
class ImportResult:
    """One imported file: where it goes, its quality report, and the candles when it passed."""

    source: str
    format: str
    pair: str
    timeframe: str
    report: SourceReport
    frame: pd.DataFrame | None
    """Validated candle frame; None when the quality check failed."""
    notes: tuple[str, ...]
    first_problem: str = ""
    """The first bad row as the strict validation names it, when the check failed."""

    def failure_reason(self) -> str:
        row = f". First bad row: {self.first_problem}" if self.first_problem else ""
        return self.report.failure_reason() + row


def _head_text(path: Path) -> str:
    """The first few KB of a (possibly gzipped) file as text."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            head: bytes = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from exc
    return head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")


def _header_fields(line: str) -> list[str]:
    return [f.strip().strip('"').lower() for f in line.split(",")]


def detect_format(path: str | Path) -> str:
    """The format of a candle file, from its name (feather, parquet) or its first lines."""
    p = Path(path)
    lower = p.name.lower()
    if lower.endswith(".feather"):
        return "feather"
    if lower.endswith(".parquet"):
        return "parquet"
    head = _head_text(p)
    if head.startswith(("[", "{")):
        return "freqtrade-json"
    lines = head.splitlines()[:2]
    if any(set(_CDD_TIME_COLUMNS) & set(_header_fields(line)) for line in lines):
        return "cryptodatadownload"
    return "csv"


def _read_csv(path: Path, skiprows: int = 0) -> pd.DataFrame:
    try:
        return pd.read_csv(path, skiprows=skiprows)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file, no header and no data rows") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from exc


def _read_freqtrade_json(path: Path) -> pd.DataFrame:
    """Raw I/O of freqtrade's json/jsongz candles: rows of [ms, open, high, low, close, volume]."""
    try:
        with path.open("rb") as handle:
            gz = handle.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rt") if gz else path.open() as handle:
            text = handle.read()
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None  # fmt: skip
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(rows, list):
        raise DataError(
            f"{path}: expected a JSON array of candle rows, found {type(rows).__name__}"
        )
    if not rows:
        raise DataError(f"{path}: empty, no candle rows")
    if all(isinstance(r, dict) for r in rows):
        return pd.DataFrame.from_records(rows)
    kinds = np.fromiter((isinstance(r, list) for r in rows), dtype=bool, count=len(rows))
    if not kinds.all():
        k = int(np.argmin(kinds))
        raise DataError(f"{path} row {k + 1}: expected an array [ms, open, high, low, close, "
                        f"volume], found {rows[k]!r}")  # fmt: skip
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if (lengths != 6).any():
        k = int(np.argmax(lengths != 6))
        raise DataError(f"{path} row {k + 1}: {lengths[k]} values {rows[k]!r}; expected 6 "
                        "[ms, open, high, low, close, volume]")  # fmt: skip
    return pd.DataFrame(rows, columns=["date", *OHLCV_COLUMNS])


def _cdd_base_quote(path: Path, symbols: np.ndarray, currencies: list[str]) -> tuple[str, str]:
    """Base and quote of a CryptoDataDownload file, from its symbol and volume columns."""
    if symbols.size > 1:
        listed = ", ".join(map(str, symbols[:5]))
        raise DataError(f"{path}: several symbols in one file ({listed}); split it per pair")
    if symbols.size == 0:
        raise ConfigError(f"{path}: no symbol column; give --pair to say which currency is base")
    symbol = str(symbols[0]).strip().upper()
    for sep in ("/", "-", "_", ":"):
        if sep in symbol:
            base, _, quote = symbol.partition(sep)
            return base, quote
    for cur in sorted(currencies, key=len, reverse=True):
        if symbol.startswith(cur) and len(symbol) > len(cur):
            return cur, symbol[len(cur) :]
    raise DataError(
        f"{path}: cannot split symbol {symbol!r} into base and quote with the volume columns "
        f"({', '.join(currencies) or 'none'}); give --pair"
    )


def _read_cryptodatadownload(path: Path, pair: str | None) -> ImportedTable:
    """Raw I/O and normalisation of a CryptoDataDownload CSV (see the module docstring)."""
    first = _head_text(path).splitlines()[:1]
    title = not (first and set(_CDD_TIME_COLUMNS) & set(_header_fields(first[0])))
    raw = _read_csv(path, skiprows=1 if title else 0)
    by_name = {str(c).strip().lower(): c for c in raw.columns}
    time_col = next((by_name[n] for n in _CDD_TIME_COLUMNS if n in by_name), None)
    volumes = {n[len("volume ") :].strip().upper(): c for n, c in by_name.items()
               if n.startswith("volume ")}  # fmt: skip
    missing = [n for n in ("open", "high", "low", "close") if n not in by_name]
    if time_col is None or missing or not volumes:
        need = [*(["unix"] if time_col is None else []), *missing,
                *([] if volumes else ["Volume <BASE>"])]  # fmt: skip
        found = ", ".join(map(str, raw.columns))
        raise DataError(f"{path}: not a CryptoDataDownload file: missing column(s) "
                        f"{', '.join(need)}; found columns: {found}")  # fmt: skip
    sym_col = by_name.get("symbol")
    symbols = raw[sym_col].dropna().unique() if sym_col is not None else np.array([])
    if pair is not None:
        base, quote = parse_pair(pair)
        if symbols.size == 1 and _cdd_base_quote(path, symbols, list(volumes)) != (base, quote):
            raise DataError(f"{path}: symbol {symbols[0]!r} is not the pair {pair} given")
    else:
        base, quote = _cdd_base_quote(path, symbols, list(volumes))
    if base not in volumes:
        raise DataError(f"{path}: no 'Volume {base}' column for the base currency of "
                        f"{base}/{quote}; volume columns: {', '.join(volumes)}")  # fmt: skip
    unix = pd.to_numeric(raw[time_col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ns, ok, _ = epoch_units(unix)
    if not ok.all():
        k = int(np.argmin(ok))
        line = k + 2 + int(title)
        cell = describe_cell(raw[time_col].iloc[k])
        raise DataError(
            f"{path} line {line} (data row {k + 1}): {time_col} {cell} is not a unix time"
        )
    order = np.argsort(ns, kind="stable")
    table = pd.DataFrame({"date": unix[order]})
    for name in ("open", "high", "low", "close"):
        table[name] = raw[by_name[name]].to_numpy()[order]
    table["volume"] = raw[volumes[base]].to_numpy()[order]
    if quote in volumes:
        table["quote_volume"] = raw[volumes[quote]].to_numpy()[order]
    newest_first = bool((np.diff(ns) <= 0).all())
    checked = f"checked against 'Volume {quote}'" if quote in volumes else "no quote volume"
    notes = [
        *(["title line skipped"] if title else []),
        "rows sorted oldest-first" + ("" if newest_first else " (the file was not newest-first)"),
        f"volume = 'Volume {base}' (base); {checked}",
    ]
    return ImportedTable(table, "cryptodatadownload", f"{base}/{quote}", None, tuple(notes))


def _with_quote_volume(raw: pd.DataFrame, quote: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The table with its quote volume column (if it has one) named ``quote_volume``, which
    the quality check compares with volume x close (``volume_units``), and a note saying so."""
    by_name = {str(c).strip().lower(): c for c in raw.columns}
    quotes = (quote,) if quote else _COMMON_QUOTES
    names = (*_QUOTE_VOLUME_NAMES, *(f"volume {q.lower()}" for q in quotes))
    col = next((by_name[n] for n in names if n in by_name), None)
    if col is None:
        return raw, []
    note = f"volume checked against the quote volume {str(col)!r}"
    return (raw if col == "quote_volume" else raw.assign(quote_volume=raw[col])), [note]


def _read_in_format(p: Path, fmt: str, pair: str | None) -> ImportedTable:
    named = parse_stem(p.name.split(".")[0])
    if fmt == "cryptodatadownload":
        table = _read_cryptodatadownload(p, pair)
        return ImportedTable(table.raw, fmt, table.pair, named[1] if named else None, table.notes)
    if fmt == "freqtrade-json":
        raw = _read_freqtrade_json(p)
    elif fmt == "csv":
        raw = _read_csv(p)
    else:
        raw = read_raw_table(p)
    named_pair = pair or (named[0] if named else None)
    raw, notes = _with_quote_volume(raw, parse_pair(named_pair)[1] if named_pair else None)
    return ImportedTable(
        raw, fmt, named[0] if named else None, named[1] if named else None, tuple(notes)
    )


def read_import_table(
    path: str | Path, fmt: str | None = None, pair: str | None = None
) -> ImportedTable:
    """Read and normalise one file of any FORMATS (detected when ``fmt`` is None); unchecked.

    When a detected format cannot read the file, the error says how it was detected, the
    formats considered and how to force one: a near miss (a ``unix`` column without
    CryptoDataDownload's volume columns) is otherwise a dead end for the user.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"import format {fmt!r} is invalid (one of {', '.join(FORMATS)})")
        return _read_in_format(p, fmt, pair)
    detected = detect_format(p)
    try:
        return _read_in_format(p, detected, pair)
    except DataError as exc:
        others = ", ".join(f for f in FORMATS if f != detected)
        raise DataError(
            f"{exc}. The format was detected as {detected} from {_DETECTED_BY[detected]} "
            f"(formats considered: {', '.join(FORMATS)}); if the file is another format, "
            f"force it with nexlify data import --format FORMAT ({others}), e.g. --format csv"
        ) from exc


def _times(raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ns, valid) of a raw table's date column; numbers read per row by magnitude."""
    raw, col = with_date_column(raw)
    if col is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    ns, ok, how = parse_dates(raw[col])
    if how.startswith("unix epoch"):
        values = pd.to_numeric(raw[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        ns, ok, _ = epoch_units(values)
    return ns, ok


def infer_timeframe(raw: pd.DataFrame, source: str) -> str:
    """The timeframe whose length is the most common spacing of the table's times."""
    ns, ok = _times(raw)
    steps = np.diff(np.unique(ns[ok])) // 1_000_000_000
    if steps.size:
        values, counts = np.unique(steps, return_counts=True)
        step = int(values[np.argmax(counts)])
        match = next((tf for tf, s in TIMEFRAMES.items() if s == step), None)
        if match:
            return match
        raise ConfigError(f"{source}: bars are {step} s apart, no supported timeframe "
                          f"({', '.join(TIMEFRAMES)}); give --timeframe")  # fmt: skip
    raise ConfigError(f"{source}: too few valid times to tell the timeframe; give --timeframe")


def _first_problem(raw: pd.DataFrame, source: str, timeframe: str) -> str:
    """The strict validation's message on the first bad row of the normalised table, if any."""
    table = raw
    if "date" in raw.columns and pd.api.types.is_numeric_dtype(raw["date"].dtype):
        ns, ok = _times(raw)  # a seconds/ms mix is reported as ms_seconds, not as bad dates
        table = raw.assign(date=pd.to_datetime(np.where(ok, ns, 0), utc=True).where(ok))
    try:
        candles_from_dataframe(table, source, timeframe)
    except DataError as exc:
        return str(exc)
    return ""


def import_candles(
    path: str | Path,
    *,
    fmt: str | None = None,
    pair: str | None = None,
    timeframe: str | None = None,
    policy: QualityPolicy | None = None,
) -> ImportResult:
    """Read, normalise, quality-check (by ``policy``) and validate one candle file.

    ``pair`` and ``timeframe`` default to what the file says (CryptoDataDownload symbol,
    ``BASE_QUOTE-tf`` name) and, for the timeframe, to the most common bar spacing.
    """
    table = read_import_table(path, fmt, pair)
    source = str(path) + (" (sorted oldest-first)" if table.format == "cryptodatadownload" else "")
    pair = pair or table.pair
    if pair is None:
        raise ConfigError(f"{path}: cannot tell the pair from the file; give --pair BASE/QUOTE")
    parse_pair(pair)
    timeframe = timeframe or table.timeframe or infer_timeframe(table.raw, str(path))
    report, frame = check_table(table.raw, source, timeframe, policy)
    if report.failed or frame is None:
        problem = _first_problem(table.raw, source, timeframe)
        return ImportResult(str(path), table.format, pair, timeframe, report, None, table.notes,
                            problem)  # fmt: skip
    frame = candles_from_dataframe(frame, source, timeframe)
    return ImportResult(str(path), table.format, pair, timeframe, report, frame, table.notes)
