"""``nexlify data download|list|check|import``: the local store and data quality."""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from nexlify.commands import COMMAND_HELP
from nexlify.config import TIMEFRAMES
from nexlify.data.external import PROVIDERS, fetch_series, funding_daily, import_series, save_series
from nexlify.data.importers import FORMATS as IMPORT_FORMATS
from nexlify.data.importers import import_candles, read_import_table
from nexlify.data.quality import (
    POLICIES,
    QualityPolicy,
    SourceReport,
    check_table,
    compare_exchanges,
    parse_policy_overrides,
)
from nexlify.data.store import CandleStore, default_store_dir, parse_stem
from nexlify.errors import ConfigError, DataError
from nexlify.io import atomic_write_json

CANDLE_GLOBS = ("*.parquet", "*.feather", "*.csv", "*.csv.gz", "*.json", "*.json.gz")


def _store(args: argparse.Namespace) -> CandleStore:
    return CandleStore(args.store_dir or default_store_dir())


def register(sub: Any) -> None:
    """Add ``data`` and its subcommands to the ``nexlify`` parser's subparsers."""
    data = sub.add_parser("data", help=COMMAND_HELP["data"])
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    store_help = "the local store (default $NEXLIFY_DATA_DIR or ~/.nexlify/data)"

    dl = data_sub.add_parser("download", help="candles via ccxt into the store (incremental)")
    dl.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    dl.add_argument("--pairs", nargs="+", default=[], metavar="PAIR", help="e.g. BTC/USDT")
    dl.add_argument("--timeframe", default="1h", choices=list(TIMEFRAMES))
    dl.add_argument("--since", metavar="DATE", help="first bar (default 2017-01-01 or resume)")
    dl.add_argument("--until", metavar="DATE", help="stop before this time (default now)")
    dl.add_argument("--fill-holes", action="store_true", help="also re-fetch missing bars")
    dl.add_argument("--funding", action="store_true", help="also the perpetual funding rates")
    dl.add_argument("--external", nargs="+", default=[], metavar="NAME",
                    help=f"also download external series ({', '.join(PROVIDERS)})")  # fmt: skip
    dl.add_argument("--store-dir", metavar="DIR", help=store_help)
    dl.set_defaults(handler=start_download)

    ls = data_sub.add_parser("list", help="what the store holds: spans, rows, gaps")
    ls.add_argument("--store-dir", metavar="DIR", help=store_help)
    ls.add_argument("--json", metavar="FILE", help="also write the listing as JSON")
    ls.set_defaults(handler=start_list)

    ck = data_sub.add_parser("check", help="quality report of candle files (gaps, outliers...)")
    ck.add_argument(
        "--data-dir", metavar="DIR", help="candle files or exchange folders (default: the store)"
    )
    ck.add_argument("--quality", nargs="+", default=[], metavar="FINDING=POLICY",
                    help="policy overrides, e.g. gap=fail outlier=drop")  # fmt: skip
    ck.add_argument("--max-fill-bars", type=int, default=24, metavar="N",
                    help="longest gap the repair fills (default 24)")  # fmt: skip
    ck.add_argument("--stale-bars", type=int, default=6, metavar="N",
                    help="shortest run of repeated closes that is stale (default 6)")  # fmt: skip
    ck.add_argument("--store-dir", metavar="DIR", help=store_help)
    ck.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    ck.set_defaults(handler=start_check)

    im = data_sub.add_parser("import", help="candle files or external CSVs into the store")
    im.add_argument("files", nargs="+", metavar="FILE",
                    help="CSV, freqtrade json/feather, CryptoDataDownload CSV files")  # fmt: skip
    im.add_argument("--exchange", help="exchange folder for candle files (e.g. binance)")
    im.add_argument("--pair", help="e.g. BTC/USDT (default: from the file name or symbol)")
    im.add_argument("--timeframe", choices=list(TIMEFRAMES),
                    help="default: from the file name, else the bar spacing")  # fmt: skip
    im.add_argument("--format", dest="import_format", choices=list(IMPORT_FORMATS),
                    help="default: detected from the content")  # fmt: skip
    im.add_argument("--quality", nargs="+", default=[], metavar="FINDING=POLICY",
                    help="policy overrides, e.g. unsorted=repair")  # fmt: skip
    im.add_argument("--external", metavar="NAME", choices=list(PROVIDERS),
                    help="import one CSV as this external series instead")  # fmt: skip
    im.add_argument("--store-dir", metavar="DIR", help=store_help)
    im.set_defaults(handler=start_import)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:>22}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("bars"), TimeElapsedColumn(), console=console, transient=False,
    )  # fmt: skip


def _advancer(bars: Progress, task: TaskID) -> Callable[[int], None]:
    def advance(n: int) -> None:
        bars.advance(task, n)

    return advance


def start_download(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify data download``."""
    from nexlify.data.exchange import (
        RetryPolicy,
        call_with_retry,
        download_candles,
        download_funding,
        make_exchange,
        to_ms,
    )

    store = _store(args)
    if not args.pairs and not args.external:
        raise ConfigError("data download: give --pairs and/or --external")
    if args.pairs:
        exchange = make_exchange(args.exchange)
        call_with_retry(
            exchange.load_markets, f"{args.exchange} markets", RetryPolicy(2), time.sleep
        )
        step = exchange.parse_timeframe(args.timeframe)
        with _progress(console) as bars:
            for pair in args.pairs:
                start = to_ms(args.since or "2017-01-01") // 1000
                end = to_ms(args.until) // 1000 if args.until else int(time.time())
                task = bars.add_task(f"{args.exchange} {pair}", total=max(1, (end - start) // step))
                result = download_candles(
                    exchange, store, pair, args.timeframe, since=args.since, until=args.until,
                    fill_holes=args.fill_holes, advance=_advancer(bars, task),
                )  # fmt: skip
                bars.update(task, total=bars.tasks[task].completed or 1)
                console.print(
                    f"{pair}: {result.added} new bars ({result.requests} requests, "
                    f"{result.retries} retries), {result.gaps} missing inside the span",
                    highlight=False,
                )
                if args.funding:
                    added = download_funding(exchange, store, pair, since=args.since)
                    funding = store.read_funding(args.exchange, pair)
                    if funding is not None and pair.startswith("BTC/"):
                        save_series("funding", funding_daily(funding), store.external_dir())
                    console.print(f"{pair}: {added} new funding rates", highlight=False)
    for name in args.external:
        frame = fetch_series(name)
        path = save_series(name, frame, store.external_dir())
        console.print(f"external {name}: {len(frame)} days -> {path}", highlight=False)
    return 0


def start_list(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify data list``."""
    store = _store(args)
    entries = store.entries()
    table = Table(title=f"Local store {store.root}")
    for col in ("exchange", "pair", "timeframe", "start", "end", "rows", "gaps"):
        table.add_column(col, justify="right" if col in ("rows", "gaps") else "left")
    for e in entries:
        table.add_row(e.exchange, e.pair, e.timeframe, f"{e.start:%Y-%m-%d %H:%M}",
                      f"{e.end:%Y-%m-%d %H:%M}", str(e.rows), str(e.gaps))  # fmt: skip
    console.print(table if entries else f"the store {store.root} holds no candles yet")
    if args.json:
        atomic_write_json(args.json, [
            {"exchange": e.exchange, "pair": e.pair, "timeframe": e.timeframe,
             "start": e.start.isoformat(), "end": e.end.isoformat(), "rows": e.rows,
             "gaps": e.gaps, "path": str(e.path)} for e in entries
        ])  # fmt: skip
    return 0


def candle_files(root: Path) -> list[tuple[str, str, str, Path]]:
    """(exchange folder, pair, timeframe, path) of candle files in root and its subfolders."""
    out = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for pattern in CANDLE_GLOBS:
            for path in sorted(folder.glob(pattern)):
                parsed = parse_stem(path.name.split(".")[0])
                if parsed:
                    out.append((folder.name, parsed[0], parsed[1], path))
    return out


def quality_reports(root: Path, policy: QualityPolicy) -> list[SourceReport]:
    """A report per candle file, then one per pair found on two exchanges (closes compared)."""
    reports: list[SourceReport] = []
    frames: dict[tuple[str, str], list[tuple[str, Any]]] = {}
    for exchange, pair, timeframe, path in candle_files(root):
        raw = read_import_table(path).raw
        report, frame = check_table(raw, str(path.relative_to(root)), timeframe, policy)
        reports.append(report)
        if frame is not None:
            frames.setdefault((pair, timeframe), []).append((exchange, frame))
    for (pair, timeframe), found in frames.items():
        for (ex_a, a), (ex_b, b) in itertools.pairwise(found):
            source = f"{pair} {timeframe} {ex_a} vs {ex_b}"
            reports.append(compare_exchanges(a, b, source, policy))
    return reports


def _report_table(reports: list[SourceReport]) -> Table:
    table = Table(title="Data quality")
    for col in ("source", "rows", "status", "finding", "count", "action", "where"):
        table.add_column(col, overflow="fold")
    for r in reports:
        status = "[red]FAIL[/]" if r.failed else "[green]pass[/]"
        if not r.findings:
            table.add_row(r.source, str(r.rows), status, "-", "0", "-", "")
        for k, f in enumerate(r.findings):
            where = ", ".join(f.where) + (f" ({f.detail})" if f.detail else "")
            first = k == 0
            head = (r.source, str(r.rows), status) if first else ("", "", "")
            table.add_row(*head, f.kind, str(f.count), f.action, where)
    return table


def start_check(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify data check``: exit 3 when a file fails its policy."""
    root = Path(args.data_dir) if args.data_dir else _store(args).root
    if not root.is_dir():
        raise DataError(f"data check: {root} is not a directory")
    policy = QualityPolicy(
        parse_policy_overrides(args.quality),
        max_fill_bars=args.max_fill_bars,
        stale_bars=args.stale_bars,
    )
    reports = quality_reports(root, policy)
    if not reports:
        raise DataError(f"data check: no <BASE>_<QUOTE>-<tf> candle files in {root}")
    console.print(_report_table(reports))
    if args.json:
        atomic_write_json(args.json, {
            "root": str(root),
            "policy": {k: policy.action(k) for k in POLICIES},
            "reports": [r.to_dict() for r in reports],
        })  # fmt: skip
    failed = [r for r in reports if r.failed]
    if failed:
        console.print(f"[bold red]{len(failed)} source(s) fail their quality policy[/]")
        return DataError.exit_code
    return 0


def start_import(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify data import``: files are checked, stored rows are never replaced."""
    store = _store(args)
    if args.external:
        if len(args.files) != 1:
            raise ConfigError("data import --external NAME takes exactly one CSV file")
        path, rows = import_series(args.external, args.files[0], store.external_dir())
        console.print(f"external {args.external}: {rows} days -> {path}", highlight=False)
        return 0
    if not args.exchange:
        raise ConfigError("data import: give --exchange (the store folder) for candle files")
    policy = QualityPolicy(parse_policy_overrides(args.quality))
    for name in args.files:
        result = import_candles(name, fmt=args.import_format, pair=args.pair,
                                timeframe=args.timeframe, policy=policy)  # fmt: skip
        if result.frame is None:
            raise DataError(result.failure_reason())
        added = store.merge(args.exchange, result.pair, result.timeframe, result.frame)
        console.print(f"{name} ({result.format}) -> {args.exchange} {result.pair} "
                      f"{result.timeframe}: {added} new bars", highlight=False)  # fmt: skip
        for line in (*result.notes, *(f.describe() for f in result.report.findings)):
            console.print(f"  {line}", highlight=False)
    return 0
