"""Daily external series (Fear & Greed, on-chain, funding, order flow, sentiment): providers.

A series is a table ``date, <columns>`` with one row per UTC day D. Each provider says when the
value of day D becomes known (``lag_hours`` after the END of day D, i.e. after D+1 00:00 UTC);
:mod:`nexlify.data.enrichment` shows a value only to bars that close at or after that moment.

=============  ================================  =========================  =====================
provider       source                            columns                    known from (day D)
=============  ================================  =========================  =====================
fear_greed     alternative.me ``/fng/`` API      value (0..100)             D+1 01:00 UTC
onchain        Coin Metrics community API        mvrv (+ market_cap, ...)   D+2 00:00 UTC
funding        exchange via ccxt (daily mean)    funding_rate               D+1 01:00 UTC
orderflow      CSV import (taker-buy fraction)   buy_frac                   D+1 01:00 UTC
sentiment      CSV import (any score in -1..1)   value                      D+2 00:00 UTC
=============  ================================  =========================  =====================

Why these lags: alternative.me stamps each value with 00:00 UTC of the day it is published for
and publishes it a few minutes after that, computed from the previous day; mirrors of the data
(CSV dumps) sometimes date it by the day it measures instead. Making the value dated D visible
only from D+1 01:00 UTC is safe under both readings (a day late under the first). Coin Metrics'
community daily metrics for D are end-of-day values published during D+1, so they are visible
from D+2 00:00. Funding and order flow aggregate the events of day D, known once D ends; one
hour of margin covers late settlement. User sentiment CSVs get a full day of margin.

Series are cached as ``<store>/external/<name>.csv``. Reading never touches the network; only
:func:`fetch_series` (``nexlify data download --external ...``) does, through an injectable
``http_get``. Without a cached file or a working download, a provider raises
:class:`ExternalUnavailableError`; it never invents values.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.errors import ConfigError, DataError
from nexlify.io import atomic_write_text

HttpGet = Callable[[str], bytes]

FNG_URL = "https://api.alternative.me/fng/?limit=0&format=json"
COINMETRICS_URL = (
    "https://community-api.coinmetrics.io/v4/timeseries/asset-metrics?assets=btc"
    "&metrics=CapMVRVCur,CapMrktCurUSD,PriceUSD,SplyCur&frequency=1d&page_size=10000"
)
_COINMETRICS_COLUMNS = {
    "CapMVRVCur": "mvrv",
    "CapMrktCurUSD": "market_cap",
    "PriceUSD": "price",
    "SplyCur": "supply",
}


class ExternalUnavailableError(DataError):
    """An external series is neither cached nor downloadable right now."""


@dataclass(frozen=True)
class Provider:
    """One external daily series: where it comes from, when it is known, how it is featured."""

    name: str
    column: str
    """The column turned into the feature."""
    lag_hours: float
    """Hours after the end of day D (D+1 00:00 UTC) from which the value of D is known."""
    transform: str
    """How the column becomes a feature (see :func:`transform_values`)."""
    source: str
    """Where the data comes from, for messages and the README."""
    aliases: tuple[str, ...] = ()
    """Other file names accepted in an external folder (e.g. the shared ``btc_onchain.csv``)."""
    url: str | None = None
    """Download URL when the provider has a public HTTP API."""


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("fear_greed", "value", 1.0, "centre_50", "alternative.me Fear & Greed API",
                 url=FNG_URL),
        Provider("onchain", "mvrv", 24.0, "log", "Coin Metrics community API (BTC)",
                 aliases=("btc_onchain",), url=COINMETRICS_URL),
        Provider("funding", "funding_rate", 1.0, "per_mille", "exchange funding via ccxt",
                 aliases=("btc_funding",)),
        Provider("orderflow", "buy_frac", 1.0, "centre_half", "CSV import (taker-buy fraction)",
                 aliases=("btc_orderflow",)),
        Provider("sentiment", "value", 24.0, "identity", "CSV import (score in -1..1)"),
    )
}  # fmt: skip
"""Every provider by name."""


def provider(name: str) -> Provider:
    """The provider called ``name``; ConfigError naming the known ones otherwise."""
    if name not in PROVIDERS:
        raise ConfigError(f"external: unknown series {name!r}; known: {', '.join(PROVIDERS)}")
    return PROVIDERS[name]


def transform_values(kind: str, x: np.ndarray) -> np.ndarray:
    """Raw values -> feature scale (then clipped to [-5, 5] by the join).

    centre_50: (v - 50) / 50 (Fear & Greed 0..100 -> -1..1); log: ln(v) (MVRV);
    per_mille: v * 1000 (funding 0.0001 -> 0.1); centre_half: (v - 0.5) * 10 (buy fraction);
    identity: v.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "centre_50": lambda: (x - 50.0) / 50.0,
            "log": lambda: np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan),
            "per_mille": lambda: x * 1000.0,
            "centre_half": lambda: (x - 0.5) * 10.0,
            "identity": lambda: x,
        }[kind]()
    return np.asarray(out, dtype=np.float64)


def validate_series(raw: pd.DataFrame, source: str, column: str) -> pd.DataFrame:
    """A daily series as a frame indexed by UTC day (``date``); DataError names file/row/field."""
    missing = [c for c in ("date", column) if c not in raw.columns]
    if missing:
        found = ", ".join(map(str, raw.columns)) or "none"
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; found: {found}")
    if len(raw) == 0:
        raise DataError(f"{source}: no data rows")
    dates = pd.to_datetime(raw["date"], utc=True, errors="coerce", format="ISO8601")
    bad = dates.isna() | (dates.notna() & (dates != dates.dt.floor("D")))
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DataError(
            f"{source} row {i + 1}: date {raw['date'].iloc[i]!r} is not a UTC day (YYYY-MM-DD)"
        )
    values = pd.to_numeric(raw[column], errors="coerce")
    bad_value = values.isna() & raw[column].notna()
    if bad_value.any():
        i = int(np.argmax(bad_value.to_numpy()))
        raise DataError(f"{source} row {i + 1}: {column} {raw[column].iloc[i]!r} is not a number")
    dup = dates.duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise DataError(f"{source} row {i + 1}: duplicate date {dates.iloc[i].date()}")
    frame = raw.drop(columns=["date"]).copy()
    frame[column] = values
    frame.index = pd.DatetimeIndex(dates, name="date")
    return frame.sort_index()


def series_file(name: str, folder: str | Path) -> Path | None:
    """The cached file of a series in ``folder`` (``<name>.csv`` or an alias), or None."""
    p = provider(name)
    for stem in (p.name, *p.aliases):
        path = Path(folder) / f"{stem}.csv"
        if path.is_file():
            return path
    return None


def load_series(name: str, folder: str | Path) -> pd.DataFrame:
    """The cached daily series ``name`` from ``folder``; never the network."""
    p = provider(name)
    path = series_file(name, folder)
    if path is None:
        raise ExternalUnavailableError(
            f"external series {name}: unavailable, no {name}.csv in {folder}. Download it "
            f"(nexlify data download --external {name}) or import a CSV "
            f"(nexlify data import --external {name} FILE); source: {p.source}"
        )
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from exc
    return validate_series(raw, str(path), p.column)


def save_series(name: str, frame: pd.DataFrame, folder: str | Path) -> Path:
    """Write a daily series (index ``date``) as ``<folder>/<name>.csv``, atomically."""
    out = frame.copy()
    out.index = pd.DatetimeIndex(out.index).strftime("%Y-%m-%d")
    out.index.name = "date"
    return atomic_write_text(Path(folder) / f"{name}.csv", out.to_csv())


def import_series(name: str, csv_path: str | Path, folder: str | Path) -> tuple[Path, int]:
    """Validate a user's CSV (``date,<column>,...``) and cache it as series ``name``."""
    p = provider(name)
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    frame = validate_series(pd.read_csv(path), str(path), p.column)
    return save_series(name, frame, folder), len(frame)


def parse_fear_greed(payload: bytes) -> pd.DataFrame:
    """alternative.me ``/fng/`` JSON -> ``date, value, classification`` rows."""
    doc = json.loads(payload)
    error = (doc.get("metadata") or {}).get("error")
    if error:
        raise ExternalUnavailableError(f"fear_greed: the API reported an error: {error}")
    rows = doc.get("data")
    if not isinstance(rows, list) or not rows:
        raise DataError("fear_greed: the API payload has no 'data' list")
    raw = pd.DataFrame(
        {
            "date": [
                pd.Timestamp(int(r["timestamp"]), unit="s", tz="UTC").strftime("%Y-%m-%d")
                for r in rows
            ],
            "value": [r["value"] for r in rows],
            "classification": [r.get("value_classification", "") for r in rows],
        }
    )
    return validate_series(raw, "alternative.me fng payload", "value")


def parse_coinmetrics(pages: list[bytes]) -> pd.DataFrame:
    """Coin Metrics ``asset-metrics`` JSON pages -> ``date, mvrv, market_cap, price, supply``."""
    rows = [row for page in pages for row in json.loads(page).get("data", [])]
    if not rows:
        raise DataError("onchain: the Coin Metrics payload has no 'data' rows")
    raw = pd.DataFrame(rows).rename(columns=_COINMETRICS_COLUMNS)
    raw["date"] = raw["time"].str.slice(0, 10)
    keep = ["date", *[c for c in _COINMETRICS_COLUMNS.values() if c in raw.columns]]
    return validate_series(raw[keep], "Coin Metrics payload", "mvrv")


def http_get_default(url: str, timeout: float = 30.0) -> bytes:
    """GET ``url`` (the only network access of this module)."""
    request = urllib.request.Request(url, headers={"User-Agent": "nexlify"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


def _get(name: str, url: str, http_get: HttpGet) -> bytes:
    try:
        return http_get(url)
    except OSError as exc:  # urllib's URLError and timeouts are OSErrors
        raise ExternalUnavailableError(
            f"external series {name}: unavailable, download from {url} failed ({exc}); "
            f"import a CSV instead (nexlify data import --external {name} FILE)"
        ) from exc


def fetch_series(name: str, http_get: HttpGet = http_get_default) -> pd.DataFrame:
    """Download a provider's whole daily history (fear_greed, onchain)."""
    p = provider(name)
    if name == "fear_greed":
        return parse_fear_greed(_get(name, FNG_URL, http_get))
    if name == "onchain":
        pages, url = [], COINMETRICS_URL
        while url:
            pages.append(_get(name, url, http_get))
            url = json.loads(pages[-1]).get("next_page_url") or ""
        return parse_coinmetrics(pages)
    how = "nexlify data download --funding" if name == "funding" else "nexlify data import"
    raise ExternalUnavailableError(
        f"external series {name}: no HTTP API ({p.source}); use {how} --external {name}"
    )


def funding_daily(events: pd.DataFrame) -> pd.DataFrame:
    """Funding events (index UTC time, ``funding_rate``) -> daily mean per UTC day."""
    days = pd.DatetimeIndex(events.index).floor("D")
    daily = events["funding_rate"].groupby(days).mean()
    frame = daily.to_frame("funding_rate")
    frame.index = pd.DatetimeIndex(frame.index, name="date")
    return frame
