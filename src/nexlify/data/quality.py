"""Data quality: find problems in candle tables, act on each by a policy, and report.

Finding types, their policies (first = default) and what each policy does:

==============  ==========================  ==================================================
finding         policies                    meaning / repair method
==============  ==========================  ==================================================
invalid         fail, drop                  unparsable date, non-finite or non-positive price,
                                            negative volume; drop removes the row
ohlc            fail, repair, drop          high < low, or high/low not enclosing open/close;
                                            repair sets high = max(o,h,l,c), low = min(o,h,l,c)
off_grid        fail, drop                  open time not a multiple of the timeframe
unsorted        fail, repair                rows out of time order; repair sorts them
duplicate       fail, repair, drop          several rows with one time; repair keeps the first,
                                            drop removes every copy
gap             repair, fail                bars missing on the grid; repair fills them flat at
                                            the previous close with volume 0 (flagged ``filled``
                                            in MarketData) up to ``max_fill_bars``; a longer gap
                                            (an exchange outage) splits the data into segments
                                            and only the latest is kept (the note names the
                                            kept and the dropped spans); fail refuses any gap
zero_volume     warn, drop, fail            bars with zero volume (the exchange printed no trade),
                                            reported as runs (bars, runs, longest run, where);
                                            drop turns them into gaps
stale           warn, drop, fail            runs of >= ``stale_bars`` (6) consecutive rows whose
                                            O, H, L and C all equal the previous close: a feed
                                            that stopped updating (even with volume); drop turns
                                            them into gaps
ms_seconds      repair, fail                numeric times in several units in one file (seconds
                                            and milliseconds, or microseconds); repair reads each
                                            row in the unit its magnitude implies (< 1e11 s,
                                            < 1e14 ms, < 1e17 us, else ns)
volume_units    fail, repair                rows whose ``volume`` holds quote units, where the
                                            file has a quote volume (``Volume USD``...): its
                                            quote volume / volume is not a price inside the
                                            bar's [low, high] but a swapped reading is; repair
                                            sets the base volume (the quote column when the
                                            columns are swapped, else quote volume / close)
outlier         warn, drop, fail            |close-to-close log return| above
                                            ``outlier_sigma`` robust sigmas (1.4826 * MAD) and
                                            above ``outlier_min_return``; drop makes it a gap
cross_exchange  warn, fail                  closes of two exchanges differ by more than
                                            ``cross_max_diff`` (relative) on shared bars
==============  ==========================  ==================================================

``warn`` keeps the data and reports; ``fail`` makes the check fail, and training refuses data
whose check fails (DataError naming the file, the finding and where).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.data.candles import (
    NS_PER_SECOND,
    OHLCV_COLUMNS,
    count_noun,
    find_column,
    format_time_ns,
    frame_from_ns,
    parse_dates,
    read_raw_table,
    resolve_columns,
)
from nexlify.data.quality_findings import (
    EPOCH_UNIT_NAMES,
    SHOWN,
    Finding,
    SourceReport,
    epoch_units,
    gap_runs,
    robust_outliers,
    runs,
    span_labels,
    stale_bars,
    volume_unit_swaps,
)
from nexlify.data.resample import find_candle_source, resample_candles
from nexlify.errors import ConfigError, DataError

POLICIES: dict[str, tuple[str, ...]] = {
    "invalid": ("fail", "drop"),
    "ohlc": ("fail", "repair", "drop"),
    "off_grid": ("fail", "drop"),
    "unsorted": ("fail", "repair"),
    "duplicate": ("fail", "repair", "drop"),
    "gap": ("repair", "fail"),
    "zero_volume": ("warn", "drop", "fail"),
    "stale": ("warn", "drop", "fail"),
    "ms_seconds": ("repair", "fail"),
    "volume_units": ("fail", "repair"),
    "outlier": ("warn", "drop", "fail"),
    "cross_exchange": ("warn", "fail"),
}
"""Allowed policies of each finding type; the first is the default."""


def parse_policy_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["gap=fail", "outlier=drop"]`` -> ``{"gap": "fail", "outlier": "drop"}`` (checked)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, action = item.partition("=")
        if not sep:
            raise ConfigError(f"--quality {item!r}: expected FINDING=POLICY, e.g. gap=fail")
        out[name.strip()] = action.strip()
    check_policy_names(out)
    return out


def check_policy_names(actions: Mapping[str, str]) -> None:
    """ConfigError naming the finding type or policy that does not exist."""
    for name, action in actions.items():
        if name not in POLICIES:
            raise ConfigError(
                f"data.quality: unknown finding {name!r}; known: {', '.join(POLICIES)}"
            )
        if action not in POLICIES[name]:
            raise ConfigError(
                f"data.quality.{name}: {action!r} is invalid (one of {', '.join(POLICIES[name])})"
            )


@dataclass(frozen=True)
class QualityPolicy:
    """What to do about each finding type, and the thresholds of the checks."""

    actions: Mapping[str, str] = field(default_factory=dict)
    """Finding type -> policy; types not given use their default (see POLICIES)."""
    max_fill_bars: int = 24
    """Longest gap (bars) the gap repair fills; a longer one splits the data (latest kept)."""
    outlier_sigma: float = 12.0
    """Robust sigmas of the 1-bar log return above which a bar is an outlier."""
    outlier_min_return: float = 0.10
    """... and the absolute log return must exceed this too (quiet series have tiny sigmas)."""
    cross_max_diff: float = 0.01
    """Relative close difference between two exchanges above which a bar disagrees."""
    stale_bars: int = 6
    """Shortest run of bars repeating the previous close that counts as ``stale``."""

    def __post_init__(self) -> None:
        check_policy_names(self.actions)
        if not isinstance(self.max_fill_bars, int) or self.max_fill_bars < 0:
            raise ConfigError(f"data.quality_max_fill_bars: {self.max_fill_bars!r} is invalid")
        if not isinstance(self.stale_bars, int) or self.stale_bars < 2:
            raise ConfigError(
                f"data.quality_stale_bars: {self.stale_bars!r} is invalid (an integer >= 2)"
            )

    def action(self, finding: str) -> str:
        return self.actions.get(finding, POLICIES[finding][0])


def _times(ns: np.ndarray, mask: np.ndarray) -> list[str]:
    return [format_time_ns(int(x)) for x in ns[mask][:SHOWN]]


def _add(report: SourceReport, kind: str, mask: np.ndarray, ns: np.ndarray, action: str) -> None:
    if mask.any():
        report.findings.append(Finding(kind, int(mask.sum()), action, _times(ns, mask)))


def _add_runs(
    report: SourceReport, kind: str, mask: np.ndarray, ns: np.ndarray, action: str, what: str
) -> None:
    """A finding over runs of consecutive rows: bars in all, runs, the longest, where."""
    starts, lengths = runs(mask)
    if starts.size:
        longest = int(lengths.max())
        detail = f"{count_noun(starts.size, what)}, longest {count_noun(longest, 'bar')}"
        where = span_labels(ns, starts, lengths)
        report.findings.append(
            Finding(kind, int(mask.sum()), action, where, detail, int(starts.size))
        )


def _parse_table(
    raw: pd.DataFrame, source: str, report: SourceReport, policy: QualityPolicy
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ns int64 [n], date ok bool [n], float64 [n, 5] OHLCV) of a raw table."""
    raw, date_col, cols = resolve_columns(raw, source)
    if len(raw) == 0:
        raise DataError(f"{source}: empty, no data rows")
    ns, ok, how = parse_dates(raw[date_col])
    if how.startswith("unix epoch"):
        ns, ok = _unit_problems(raw[date_col], report, policy)
    values = np.stack(
        [pd.to_numeric(raw[cols[k]], errors="coerce").to_numpy(np.float64, na_value=np.nan)
         for k in OHLCV_COLUMNS], axis=1,
    )  # fmt: skip
    return ns, ok, values


def _unit_problems(
    dates: pd.Series, report: SourceReport, policy: QualityPolicy
) -> tuple[np.ndarray, np.ndarray]:
    """Numeric times read row by row (ms_seconds); returns (ns, valid) of every row.

    Both policies read each row in its own unit, so that the other findings stay meaningful
    when ``fail`` stops the data anyway.
    """
    values = pd.to_numeric(dates, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ns, ok, unit = epoch_units(values)
    counts = np.bincount(unit[unit >= 0], minlength=len(EPOCH_UNIT_NAMES))
    if np.count_nonzero(counts) > 1:
        majority = int(np.argmax(counts))
        odd = (unit >= 0) & (unit != majority)
        action = policy.action("ms_seconds")
        units = ", ".join(f"{c} in {EPOCH_UNIT_NAMES[u]}" for u, c in enumerate(counts) if c)
        detail = f"rows {units}" + ("; each read in its own unit" if action == "repair" else "")
        report.findings.append(
            Finding("ms_seconds", int(odd.sum()), action, _times(ns, odd), detail)
        )
    return ns, ok


def _volume_unit_problems(
    raw: pd.DataFrame, ns: np.ndarray, ok: np.ndarray, v: np.ndarray, report: SourceReport,
    policy: QualityPolicy,
) -> None:  # fmt: skip
    """Rows whose volume holds quote units (``volume_units``), when the table has a
    ``quote_volume`` column (the importers name a file's quote volume so); ``repair`` writes
    the base volume into ``v``. Volume features would otherwise jump by the price factor."""
    col = find_column(raw, ("quote_volume",))
    if col is None:
        return
    quote = pd.to_numeric(raw[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    columns, both_quote, mismatched, base = volume_unit_swaps(v, quote)
    swapped = (columns | both_quote) & ok
    if not swapped.any():
        return
    action = policy.action("volume_units")
    rows = np.flatnonzero(ok)
    rows = rows[np.argsort(ns[rows], kind="stable")]  # spans in time order
    starts, lengths = runs(swapped[rows])
    first, last = format_time_ns(int(ns[swapped].min())), format_time_ns(int(ns[swapped].max()))
    neither = int((mismatched & ok).sum())
    detail = (
        f"volume in quote units on {count_noun(int(swapped.sum()), 'row')} from {first} to {last}"
        f" ({count_noun(starts.size, 'run')}; on {int((columns & ok).sum())} the quote column holds"
        " the base volume)" + (f"; {neither} other rows match neither unit" if neither else "")
        + ("; volume set to the base volume" if action == "repair" else "")
    )  # fmt: skip
    where = span_labels(ns[rows], starts, lengths)
    report.findings.append(
        Finding("volume_units", int(swapped.sum()), action, where, detail, int(starts.size))
    )
    if action == "repair":
        v[swapped, 4] = base[swapped]


def _row_problems(
    ns: np.ndarray, ok: np.ndarray, v: np.ndarray, report: SourceReport, policy: QualityPolicy,
    step_ns: int,
) -> np.ndarray:  # fmt: skip
    """Checks of single rows (invalid, ohlc, off_grid); returns the rows to keep."""
    o, h, lo, c, vol = v.T
    invalid = ~ok | ~np.isfinite(v).all(axis=1) | (v[:, :4] <= 0).any(axis=1) | (vol < 0)
    _add(report, "invalid", invalid, ns, policy.action("invalid"))
    keep = ~invalid
    ohlc = keep & ((h < lo) | (h < np.maximum(o, c)) | (lo > np.minimum(o, c)))
    action = policy.action("ohlc")
    _add(report, "ohlc", ohlc, ns, action)
    if action == "repair":
        v[ohlc, 1] = v[ohlc, :4].max(axis=1)
        v[ohlc, 2] = v[ohlc, :4].min(axis=1)
    elif action == "drop":
        keep &= ~ohlc
    off = keep & (ns % step_ns != 0)
    _add(report, "off_grid", off, ns, policy.action("off_grid"))
    return keep & ~off


def _order_problems(
    ns: np.ndarray, v: np.ndarray, report: SourceReport, policy: QualityPolicy
) -> tuple[np.ndarray, np.ndarray]:
    """Unsorted and duplicate rows; returns the rows in time order, one per time."""
    earlier = np.concatenate(([False], ns[1:] < ns[:-1]))
    _add(report, "unsorted", earlier, ns, policy.action("unsorted"))
    order = np.argsort(ns, kind="stable")
    ns, v = ns[order], v[order]
    dup_all = pd.Series(ns).duplicated(keep=False).to_numpy()
    later_copy = pd.Series(ns).duplicated(keep="first").to_numpy()
    action = policy.action("duplicate")
    _add(report, "duplicate", later_copy, ns, action)
    drop = dup_all if action == "drop" else later_copy
    return ns[~drop], v[~drop]


def _bar_problems(
    ns: np.ndarray, v: np.ndarray, report: SourceReport, policy: QualityPolicy
) -> np.ndarray:
    """Zero-volume runs, stale prices and outliers; returns the rows to keep."""
    keep = np.ones(ns.size, dtype=bool)
    zero = v[:, 4] == 0
    stale = stale_bars(v[:, :4], policy.stale_bars)
    for kind, mask, what in (("zero_volume", zero, "run"), ("stale", stale, "run")):
        _add_runs(report, kind, mask, ns, policy.action(kind), what)
        keep &= ~(mask & (policy.action(kind) == "drop"))
    outlier = robust_outliers(v[:, 3], policy.outlier_sigma, policy.outlier_min_return)
    _add(report, "outlier", outlier, ns, policy.action("outlier"))
    if policy.action("outlier") == "drop":
        keep &= ~outlier
    return keep


def _span(first_ns: int, last_ns: int, bars: int) -> str:
    return f"{format_time_ns(first_ns)} .. {format_time_ns(last_ns)} ({count_noun(bars, 'bar')})"


def _latest_segment(
    ns: np.ndarray, starts: np.ndarray, lengths: np.ndarray, max_fill: int, step: int
) -> tuple[int, str]:
    """First row of the segment after the last gap longer than ``max_fill`` bars, and a note
    naming the kept span and each dropped one (with the gap that ends it).

    Filling a long outage flat would invent hours of prices, and features or episodes spanning
    it would mix two markets, so the data is cut there and only the latest piece is used.
    """
    long_gaps = np.flatnonzero(lengths > max_fill)
    bounds = [0]  # first row of each segment
    for g in long_gaps:
        bounds.append(int(np.searchsorted(ns, starts[g] + lengths[g] * step)))
    bounds.append(ns.size)
    first = bounds[-2]
    kept = _span(int(ns[first]), int(ns[-1]), ns.size - first)
    dropped = [
        _span(int(ns[a]), int(ns[b - 1]), b - a) + f" before a {int(lengths[g])}-bar gap"
        for a, b, g in zip(bounds[:-2], bounds[1:-1], long_gaps, strict=True)
    ]
    return first, (
        f"; {count_noun(long_gaps.size, 'gap')} longer than {max_fill} bars split the data: "
        f"kept the latest segment {kept}; dropped {'; '.join(dropped)} (quality gap=fail refuses "
        "such data instead)"
    )


def _gap_problems(ns: np.ndarray, report: SourceReport, policy: QualityPolicy, step: int) -> int:
    """Report the gaps; returns the first row to keep (0 unless a gap longer than
    ``max_fill_bars`` splits the data under ``repair``: then the latest segment is kept)."""
    starts, lengths = gap_runs(ns, step)
    if not starts.size:
        return 0
    action = policy.action("gap")
    longest = int(lengths.max())
    detail = f"{starts.size} gaps, longest {longest} bars"
    first = 0
    if action == "repair" and longest > policy.max_fill_bars:
        first, split = _latest_segment(ns, starts, lengths, policy.max_fill_bars, step)
        detail += split
    where = [
        format_time_ns(int(start))
        + (f" .. {format_time_ns(int(start + (n - 1) * step))}" if n > 1 else "")
        for start, n in zip(starts[:SHOWN], lengths[:SHOWN], strict=True)
    ]
    total = int(lengths.sum())
    report.findings.append(Finding("gap", total, action, where, detail, int(starts.size)))
    return first


def check_table(
    raw: pd.DataFrame, source: str, timeframe: str, policy: QualityPolicy | None = None
) -> tuple[SourceReport, pd.DataFrame | None]:
    """Check a raw candle table; (report, cleaned candle frame or None when nothing is left)."""
    policy = policy or QualityPolicy()
    step = timeframe_seconds(timeframe) * NS_PER_SECOND
    report = SourceReport(source, len(raw))
    ns, ok, v = _parse_table(raw, source, report, policy)
    _volume_unit_problems(raw, ns, ok, v, report, policy)
    keep = _row_problems(ns, ok, v, report, policy, step)
    ns, v = _order_problems(ns[keep], v[keep], report, policy)
    keep = _bar_problems(ns, v, report, policy)
    ns, v = ns[keep], v[keep]
    if ns.size:
        first = _gap_problems(ns, report, policy, step)
        ns, v = ns[first:], v[first:]
    frame = frame_from_ns(ns, v) if ns.size else None
    return report, frame


def rows_before(raw: pd.DataFrame, source: str, before: pd.Timestamp) -> pd.DataFrame:
    """The rows of a raw candle table whose open time is before ``before`` (UTC); rows with
    unreadable times are kept, so that the checks still report them.

    An out-of-sample study cuts here, before any check, repair or feature sees a later bar.
    """
    table, date_col, _ = resolve_columns(raw, source)
    ns, ok, how = parse_dates(table[date_col])
    if how.startswith("unix epoch"):  # several units in one file: each row in its own
        numbers = pd.to_numeric(table[date_col], errors="coerce")
        ns, ok, _ = epoch_units(numbers.to_numpy(np.float64, na_value=np.nan))
    cut = pd.Timestamp(before)
    cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
    return raw.iloc[np.flatnonzero(~ok | (ns < cut.value))]


def check_file(
    path: str | Path,
    timeframe: str,
    policy: QualityPolicy | None = None,
    before: pd.Timestamp | None = None,
) -> tuple[SourceReport, pd.DataFrame | None]:
    """Check one candle file (CSV, Parquet or feather); only bars before ``before`` if given."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such candle file")
    raw = read_raw_table(p)
    if before is not None:
        raw = rows_before(raw, str(p), before)
    return check_table(raw, str(p), timeframe, policy)


def compare_exchanges(
    a: pd.DataFrame, b: pd.DataFrame, source: str, policy: QualityPolicy | None = None
) -> SourceReport:
    """Closes of one pair on two exchanges, on their shared bars (relative to ``b``)."""
    policy = policy or QualityPolicy()
    shared = a.index.intersection(b.index)
    report = SourceReport(source, len(shared))
    if len(shared) == 0:
        return report
    ca, cb = a.loc[shared, "close"].to_numpy(), b.loc[shared, "close"].to_numpy()
    diff = np.abs(ca - cb) / cb
    bad = diff > policy.cross_max_diff
    detail = (
        f"median {np.median(diff) * 1e4:.1f} bps, max {diff.max() * 1e4:.1f} bps over "
        f"{len(shared)} shared bars"
    )
    ns = pd.DatetimeIndex(shared).as_unit("ns").asi8
    action = policy.action("cross_exchange") if bad.any() else "pass"
    finding = Finding("cross_exchange", int(bad.sum()), action, _times(ns, bad), detail)
    report.findings.append(finding)
    return report


def load_checked_pairs(
    data_dir: str | Path,
    pairs: Sequence[str],
    timeframe: str,
    policy: QualityPolicy | None = None,
    before: pd.Timestamp | None = None,
) -> tuple[dict[str, pd.DataFrame], list[SourceReport]]:
    """Each pair's candle file (bars before ``before`` if given), checked and cleaned by
    ``policy``; DataError when one fails."""
    frames: dict[str, pd.DataFrame] = {}
    reports = []
    for pair in pairs:
        path, source_tf = find_candle_source(data_dir, pair, timeframe)
        report, frame = check_file(path, source_tf, policy, before)
        reports.append(report)
        if report.failed:
            raise DataError(
                report.failure_reason() + ". Fix the file or change the policy "
                "(--quality FINDING=POLICY; see nexlify data check)"
            )
        if frame is None or len(frame) < 2:
            raise DataError(f"{report.source}: fewer than 2 usable bars after the quality policy")
        if source_tf != timeframe:  # e.g. 4h asked, only 1h files: resampled after the checks
            frame, note = resample_candles(frame, source_tf, timeframe, report.source)
            report.notes.append(note)
        frames[pair] = frame
    return frames, reports


def quality_notes(reports: Sequence[SourceReport]) -> tuple[str, ...]:
    """One note per finding (and per resampled file), for MarketData.notes and the summary."""
    findings = [f"quality {r.source}: {f.describe()}" for r in reports for f in r.findings]
    return (*findings, *(note for r in reports for note in r.notes))
