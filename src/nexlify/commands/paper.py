"""``nexlify paper``: paper (or guarded live) trading of a saved model; ``nexlify paper status``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.live import Live

from nexlify.commands import COMMAND_HELP
from nexlify.commands.rolling_options import add_rolling_flags, rolling_spec
from nexlify.config import TIMEFRAMES
from nexlify.data.candles import read_candles
from nexlify.data.market_data import MarketData, build_market_data
from nexlify.data.resample import read_pair_candles
from nexlify.errors import ConfigError, DataError
from nexlify.evaluation.backtest import ModelSpec, model_spec
from nexlify.evaluation.edge import describe_edge, read_model_edge
from nexlify.live.broker import LiveBroker
from nexlify.live.control import (
    StoppableFeed,
    StopSignal,
    mark_stop_handled,
    pending_stop,
    request_stop,
)
from nexlify.live.feeds import Feed, ReplayFeed
from nexlify.live.notify import close_notifier, start_notifier, webhook_url
from nexlify.live.polling import PollingFeed
from nexlify.live.secrets import Credentials, install_redaction
from nexlify.live.session import SessionProgress, SessionSettings, open_session, run_session
from nexlify.live.status import closing_line, render_status, status_json, status_snapshot
from nexlify.live.store import SessionStore
from nexlify.live.trader import PaperTrader
from nexlify.live.venue import SPOT_OPTIONS, Venue, check_position_size, enable_sandbox
from nexlify.pipeline.rolling import RollingSpec

CONFIRM_FLAG = "--i-understand-this-trades-real-money"
ExchangeFactory = Callable[[str, dict[str, Any]], Any]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "paper",
        help=COMMAND_HELP["paper"],
        description="Run a saved model on closed candles (polled from an exchange through ccxt, "
        "or replayed from files) through the same simulator as training and backtests; state "
        "lives in a SQLite file and a restart continues exactly. 'nexlify paper status --db "
        "PATH' prints a session's status.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["run", "status", "report", "serve", "stop"],
        default="run",
        help="run (default), status, report (HTML of the session, to --out), or serve (a local "
        "web page that watches the session), or stop (ask the running session to end; "
        "--flatten also closes its live positions)",
    )
    p.add_argument(
        "--db",
        default="paper_session.db",
        metavar="PATH",
        help="session database (default paper_session.db)",
    )
    p.add_argument("--model", metavar="PATH", help="a model .pt file (single or ensemble)")
    p.add_argument("--pairs", nargs="+", metavar="PAIR", help="check: must be the model's pairs")
    p.add_argument("--timeframe", choices=list(TIMEFRAMES), help="check: the model's timeframe")
    p.add_argument(
        "--feed",
        choices=["poll", "replay"],
        default="poll",
        help="poll an exchange (default) or replay candle files",
    )
    p.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    p.add_argument(
        "--data",
        nargs="+",
        metavar="FILE",
        help="replay: candle files (one per pair, <BASE>_<QUOTE>-<tf>.csv style) "
        "or one folder holding them",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=0.0,
        metavar="N",
        help="replay: bars per second (0 = as fast as possible)",
    )
    p.add_argument("--start", metavar="DATE", help="replay: first bar of the trading period")
    p.add_argument(
        "--max-bars",
        type=int,
        metavar="N",
        help="stop after trading N bars (bars after the first decision; the feature warm-up "
        "and the bars before --start do not count)",
    )
    p.add_argument(
        "--history-bars",
        type=int,
        metavar="N",
        help="poll: closed candles fetched before the first decision (default 1000, or the "
        "model's feature warm-up and observation window when longer)",
    )
    p.add_argument(
        "--gap-cooldown",
        type=int,
        default=24,
        metavar="BARS",
        help="no new entries for this many bars after a feed gap (24)",
    )
    p.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    p.add_argument(
        "--notify",
        type=webhook_url,
        metavar="URL",
        help="run: post entries, trades, stops, gaps, retrains and errors as JSON to this webhook",
    )
    p.add_argument("--no-view", action="store_true", help="no live status view (log lines)")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.add_argument("--out", metavar="FILE", help="report: HTML file (default: DB name + .html)")
    p.add_argument(
        "--host", default="127.0.0.1", help="serve: address (127.0.0.1; any other needs --token)"
    )
    p.add_argument("--port", type=int, default=8765, help="serve: port (8765; 0 = any free one)")
    p.add_argument(
        "--token", metavar="T", help="serve: every request must carry ?token=T (or a Bearer header)"
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="place REAL orders (keys from NEXLIFY_API_KEY / NEXLIFY_API_SECRET); refused for a "
        "model the pipeline's no-edge gate did not pass, unless --allow-no-edge",
    )
    p.add_argument(
        "--allow-no-edge",
        action="store_true",
        help="with --live: trade a model that showed no edge over cash anyway (logged)",
    )
    p.add_argument(
        CONFIRM_FLAG,
        dest="confirm_real_money",
        action="store_true",
        help="required with --live (not with --sandbox: test money)",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="use the exchange's sandbox/testnet through ccxt (refused where it has none); "
        "testnet keys in NEXLIFY_API_KEY / NEXLIFY_API_SECRET",
    )
    p.add_argument(
        "--flatten",
        action="store_true",
        help="stop: cancel the protective orders and market-sell the live positions",
    )
    add_rolling_flags(
        p,
        "run: fine-tune the trading model every --retrain-every days of bars on the session's "
        "latest closed candles in a background process, and swap the candidate in only when "
        "it beats the trading model on the latest --retrain-score-days (bars neither trained "
        "on); replay swaps at the bar after the retrain bar (waiting for it), poll/live from "
        "the first bar after the result arrives (never waiting)",
    )
    p.set_defaults(handler=start_paper)


def make_ccxt_exchange(exchange_id: str, config: dict[str, Any]) -> Any:
    try:
        import ccxt
    except ImportError:
        raise ConfigError("--feed poll and --live need ccxt: pip install ccxt") from None
    if exchange_id not in ccxt.exchanges:
        raise ConfigError(
            f"--exchange {exchange_id!r}: not an exchange ccxt knows (e.g. binance, kraken, okx)"
        )
    return getattr(ccxt, exchange_id)({"enableRateLimit": True, **config})


def poll_history_bars(spec: ModelSpec) -> int:
    """Candles a polling session fetches at its start: 1000, or the model's warm-up (its
    feature warm-up, the 2 bars MarketData needs, its observation window) when longer."""
    return max(1000, spec.feature_warmup + 2 + spec.market.env.obs_window)


def _replay_frames(files: list[str], pairs: tuple[str, ...], tf: str) -> dict[str, pd.DataFrame]:
    if len(files) == 1 and Path(files[0]).is_dir():
        return {p: read_pair_candles(files[0], p, tf) for p in pairs}
    if len(files) != len(pairs):
        raise ConfigError(
            f"--data: the model trades {list(pairs)}; give one file per pair "
            f"(got {len(files)}) or a folder"
        )
    by_name = {Path(f).name.split("-")[0].replace("_", "/").upper(): f for f in files}
    if set(by_name) == set(pairs):
        return {p: read_candles(by_name[p], tf) for p in pairs}
    return {p: read_candles(f, tf) for p, f in zip(pairs, files, strict=True)}


def _make_exchange(
    args: argparse.Namespace, credentials: Credentials | None, factory: ExchangeFactory
) -> Any:
    """The ccxt exchange of the session: spot markets only when trading; its testnet with
    ``--sandbox`` (refused where ccxt knows none)."""
    config: dict[str, Any] = {}
    if credentials is not None:
        config = {**credentials.ccxt_config(), "options": dict(SPOT_OPTIONS)}
    exchange = factory(args.exchange, config)
    if args.sandbox:
        enable_sandbox(exchange)
    return exchange


def _session_closes(
    store: SessionStore, pairs: tuple[str, ...], replay: MarketData | None
) -> dict[str, float]:
    """The last close per pair: stored candles, else (a new replay) the replayed data's."""
    candles = store.candles(list(pairs))
    closes = {p: float(rows[-1, 4]) for p, rows in candles.items() if len(rows)}
    if not closes and replay is not None:
        closes = dict(zip(replay.pairs, replay.prices[-1, :, 3].tolist(), strict=True))
    return closes


def _request_stop(args: argparse.Namespace, console: Console) -> int:
    """``nexlify paper stop``: write a stop request the running session acts on."""
    if not Path(args.db).is_file():
        raise DataError(f"{args.db}: no such session database")
    store = SessionStore(args.db)
    try:
        if store.session() is None:
            raise DataError(f"{args.db}: no session in this database")
        request_stop(store, flatten=args.flatten, source="nexlify paper stop")
    finally:
        store.close()
    what = "stop and flatten" if args.flatten else "stop"
    console.print(
        f"{what} requested in {args.db}: the running session acts on it within one poll "
        "(a session not running acts on it when started)"
    )
    return 0


def _finish_stop(store: SessionStore, broker: LiveBroker | None, console: Console) -> None:
    """After the loop: carry out a pending stop request (flatten first when asked)."""
    request = pending_stop(store)
    if request is None:
        return
    outcome = f"stopped on request ({request['source']})"
    if request["flatten"]:
        if broker is None:
            outcome += "; flatten asked, but a paper session holds nothing on an exchange"
        else:
            orders = broker.flatten(store.cursor() or 0)
            sold = sum(1 for o in orders if o["status"] == "filled")
            left = {p: a for p, a in broker.holdings().items() if a > 0}
            outcome += f"; flattened: {sold} market sell(s) filled"
            if left:
                outcome += f"; STILL HELD (check the exchange): {left}"
    mark_stop_handled(store, outcome)
    console.print(outcome)


def _setup_logging(args: argparse.Namespace) -> logging.Logger:
    log = logging.getLogger("nexlify.paper")
    log.setLevel(logging.INFO)
    if args.log:
        handler = logging.FileHandler(args.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    return log


def start_paper(
    args: argparse.Namespace,
    console: Console,
    exchange_factory: ExchangeFactory = make_ccxt_exchange,
) -> int:
    """Handler of ``nexlify paper``."""
    if args.action == "serve":
        from nexlify.live.serve import start_serve

        return start_serve(args, console)
    if args.action == "report":
        return _write_report(args, console)
    if args.action == "stop":
        return _request_stop(args, console)
    if args.action == "status":
        return _print_status(args)
    return _run(args, console, exchange_factory)


def _write_report(args: argparse.Namespace, console: Console) -> int:
    from nexlify.io import atomic_write_text
    from nexlify.live.session_report import paper_report_html

    out = args.out or str(Path(args.db).with_suffix(".html"))
    atomic_write_text(out, paper_report_html(args.db))
    console.print(f"report written: {out}")
    return 0


def _print_status(args: argparse.Namespace) -> int:
    if not Path(args.db).is_file():
        raise DataError(f"{args.db}: no such session database")
    store = SessionStore(args.db)
    snap = status_snapshot(store)
    print(status_json(snap)) if args.json else Console().print(render_status(snap))
    store.close()
    return 0


def _live_credentials(args: argparse.Namespace) -> Credentials | None:
    """The keys for ``--live`` (after its confirmation), None for paper trading."""
    if not args.live:
        return None
    if not args.confirm_real_money and not args.sandbox:
        raise ConfigError(f"--live places real orders; add {CONFIRM_FLAG} to confirm")
    return Credentials.from_environment()


def _replay_feed(
    args: argparse.Namespace, spec: ModelSpec
) -> tuple[ReplayFeed, MarketData, int | None]:
    """The replay feed, its data (for the feature check) and the ``--start`` time."""
    if not args.data:
        raise ConfigError("--feed replay needs --data FILE [FILE ...]")
    frames = _replay_frames(args.data, spec.pairs, spec.timeframe)
    check = build_market_data(frames, spec.timeframe, "replay", features=spec.features)
    start = int(pd.Timestamp(args.start, tz="UTC").timestamp()) if args.start else None
    return ReplayFeed(frames, spec.timeframe, args.speed), check, start


def _check_edge(args: argparse.Namespace, retrain: RollingSpec | None, log: logging.Logger) -> None:
    """Real money only for a model the no-edge gate passed, unless ``--allow-no-edge``; with
    rolling retraining, the fine-tunes a session swaps in were never tested by the gate."""
    if not args.live or args.sandbox:
        return
    edge = read_model_edge(args.model)
    if edge is not None and edge.get("found"):
        if retrain is None:
            return
        why = (
            "with --retrain-every the session swaps in fine-tuned models that the no-edge gate "
            "never tested (they beat the trading model on the last "
            f"{retrain.score_days:g} days, a test that does not account for selection)"
        )
        refusal = (f"{why}. Paper-trade with retraining, or trade {args.model} live without "
                   "it; add --allow-no-edge to trade the fine-tunes")  # fmt: skip
    else:
        why = (
            "it carries no edge verdict (trained before the no-edge gate, or not by the pipeline)"
            if edge is None
            else describe_edge(edge)
        )
        refusal = (f"{args.model} showed no edge over cash: {why}. Paper-trade it, or retrain; "
                   "add --allow-no-edge to trade it")  # fmt: skip
    if not args.allow_no_edge:
        raise ConfigError(f"--live: {refusal} with real money anyway")
    log.warning("--allow-no-edge: trading %s with real money although %s", args.model, why)


def _check_spot_only(args: argparse.Namespace, spec: ModelSpec) -> None:
    """Live sessions place spot orders only; a model whose actions include strategy books
    (staking, lending, liquidity, arbitrage) would have them simulated beside real orders."""
    books = [name for name in spec.market.strategies.enabled if name != "spot"]
    if args.live and books:
        raise ConfigError(
            f"--live: {args.model} was trained with {', '.join(books)}; live sessions place "
            "spot orders only, so those books would be simulated, not held on the exchange. "
            "Paper-trade it (its books are simulated as in the backtest), or train with "
            "--strategies spot"
        )


def _run(args: argparse.Namespace, console: Console, exchange_factory: ExchangeFactory) -> int:
    """``nexlify paper [run]``: open or continue the session and run it over its feed."""
    if not args.model:
        raise ConfigError("--model is required to run a session")
    retrain = rolling_spec(args, "paper")
    credentials = _live_credentials(args)
    log = _setup_logging(args)
    if credentials is not None:
        install_redaction(credentials, log)
    from nexlify.agent.ensemble import load_policy

    policy, meta = load_policy(args.model)
    spec = model_spec(meta, args.model)
    _check_spot_only(args, spec)
    _check_edge(args, retrain, log)
    if args.pairs and tuple(args.pairs) != spec.pairs:
        raise ConfigError(f"--pairs {args.pairs}: the model trades {list(spec.pairs)}")
    if args.timeframe and args.timeframe != spec.timeframe:
        raise ConfigError(f"--timeframe {args.timeframe}: the model uses {spec.timeframe}")
    feed: Feed
    check, start = None, None
    if args.feed == "replay":
        feed, check, start = _replay_feed(args, spec)
    exchange = None
    if args.feed == "poll" or args.live:
        exchange = _make_exchange(args, credentials, exchange_factory)
    elif args.sandbox:
        raise ConfigError("--sandbox applies to --feed poll or --live (replay uses no exchange)")
    venue = None
    if credentials is not None:
        venue = Venue(exchange, spec.pairs, log)
        venue.load()  # a venue without the pairs is refused before anything is written
    if args.feed == "poll":
        history = args.history_bars or poll_history_bars(spec)
        feed = PollingFeed(exchange, spec.pairs, spec.timeframe, history_bars=history, logger=log)
    settings = SessionSettings(
        db=Path(args.db),
        model_path=args.model,
        feed=args.feed,
        mode="live" if args.live else "paper",
        start_time=start,
        gap_cooldown=args.gap_cooldown,
        retrain=retrain,
    )
    store, trader = open_session(settings, policy, spec, feed, check, log)
    inner_feed, sigterm = feed, StopSignal()
    feed = StoppableFeed(feed, store, sigterm)
    if isinstance(inner_feed, PollingFeed):
        inner_feed.should_stop = feed.stop_requested
    broker = None
    if credentials is not None and venue is not None:
        money = "test money (sandbox)" if args.sandbox else "REAL orders will be placed"
        console.print(f"[bold red]LIVE TRADING: {money}[/]")
        check_position_size(venue, spec.market, _session_closes(store, spec.pairs, check))
        broker = LiveBroker(exchange, store, credentials, log, venue=venue, feed=inner_feed)
        broker.start(trader)
    notifier = start_notifier(args.notify, store.path, log, credentials)
    restore_sigterm = sigterm.install(log)
    try:
        progress = _loop(args, console, trader, feed, broker, store)
        console.print(closing_line(status_snapshot(store), progress.new_bars, progress.traded))
        _finish_stop(store, broker, console)
    finally:
        restore_sigterm()
        if trader.retrainer is not None:
            trader.retrainer.close()
        store.close()
        close_notifier(notifier)
    return 0


def _loop(
    args: argparse.Namespace,
    console: Console,
    trader: PaperTrader,
    feed: Feed,
    broker: LiveBroker | None,
    store: SessionStore,
) -> SessionProgress:
    """Run the session with the live status view (or log lines only)."""
    if args.no_view or not console.is_terminal:
        return run_session(trader, feed, broker=broker, max_bars=args.max_bars)
    with Live(render_status(status_snapshot(store)), console=console) as view:

        def refresh() -> None:
            view.update(render_status(status_snapshot(store)))

        return run_session(trader, feed, broker=broker, max_bars=args.max_bars, on_update=refresh)
