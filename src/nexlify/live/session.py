"""Open (or continue) a paper session and run it over a feed until the feed ends.

A new session records its model (path and sha256), pairs, timeframe, feed, mode, market
settings and rolling-retraining settings; continuing with another model, pairs, timeframe, mode
or retraining settings is refused. The model's
features must match the data's (checked before anything is written).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nexlify.data.candles import NS_PER_SECOND, format_time_ns
from nexlify.data.features import feature_config_to_dict
from nexlify.data.market_data import MarketData
from nexlify.errors import DataError
from nexlify.evaluation.backtest import ModelSpec, check_compatible
from nexlify.live.broker import LiveBroker
from nexlify.live.feeds import Bar, Feed
from nexlify.live.retrain import SessionRetrainer, check_session_schedule, session_run_config
from nexlify.live.store import SessionStore
from nexlify.live.trader import CandleHistory, PaperTrader, Policy, first_decision_index
from nexlify.pipeline.rolling import RollingSpec


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SessionSettings:
    """What a session is (stored in its ``session`` row)."""

    db: Path
    """SQLite file of the session."""
    model_path: str
    """The model file (its sha256 is recorded and checked on restart)."""
    feed: str
    """``poll`` or ``replay``."""
    mode: str = "paper"
    """``paper`` or ``live``."""
    start_time: int | None = None
    """First bar of the trading period (unix s); None = as soon as the warm-up allows."""
    gap_cooldown: int = 24
    """Bars after a feed gap during which new entries are held back."""
    retrain: RollingSpec | None = None
    """Rolling retraining (``--retrain-every`` ...); None = the model never changes."""


def _check_features(spec: ModelSpec, data: MarketData | None, settings: SessionSettings) -> None:
    if data is None:
        raise DataError(
            f"the {settings.feed} feed gave too few candles to compute features (the model's "
            f"warm-up needs {spec.feature_warmup + 2} bars per pair); give more candles "
            "(--history-bars)"
        )
    check_compatible(spec, data, settings.model_path)
    last_bar = int(data.time[-1])
    if settings.start_time is not None and settings.start_time > last_bar:
        start = format_time_ns(settings.start_time * NS_PER_SECOND)
        last = format_time_ns(last_bar * NS_PER_SECOND)
        raise DataError(
            f"--start {start}: after the last candle of the {settings.feed} data ({last}); "
            "give a start inside the data"
        )


def open_session(
    settings: SessionSettings,
    policy: Policy,
    spec: ModelSpec,
    feed: Feed,
    check_data: MarketData | None = None,
    logger: logging.Logger | None = None,
) -> tuple[SessionStore, PaperTrader]:
    """Create the session (first run) or check it is the same one (restart); the trader."""
    log = logger or logging.getLogger("nexlify.paper")
    store = SessionStore(settings.db)
    digest = file_sha256(settings.model_path)
    identity = {
        "model_sha256": digest,
        "pairs": list(spec.pairs),
        "timeframe": spec.timeframe,
        "mode": settings.mode,
        "retrain_spec": None if settings.retrain is None else settings.retrain.to_dict(),
    }
    tune_config = None
    if settings.retrain is not None:
        tune_config = session_run_config(settings.model_path, spec.market, settings.retrain)
    initial: list[Bar] = []
    existing = store.session()
    if existing is None:
        initial = feed.initial_bars()
        start_time = settings.start_time
        if initial:  # polling: trade from the last closed bar on
            history = CandleHistory(spec.pairs, spec.timeframe, feed.name, spec.features)
            for bar in initial:
                history.append(bar)
            check_data = history.market_data()
            window = spec.market.env.obs_window
            start_time = initial[-1].time - (window - 1) * history.step
        _check_features(spec, check_data, settings)
        if settings.retrain is not None and tune_config is not None and check_data is not None:
            window = spec.market.env.obs_window
            decision = first_decision_index(check_data.time, start_time, window)
            fetched = len(initial) if initial else None
            check_session_schedule(settings.retrain, tune_config, check_data, decision,
                                   spec.feature_warmup, fetched)  # fmt: skip
        store.create_session(
            model_path=str(settings.model_path),
            model_sha256=digest,
            pairs=spec.pairs,
            timeframe=spec.timeframe,
            feed=settings.feed,
            mode=settings.mode,
            market_config={
                **dataclasses.asdict(spec.market),
                "features": feature_config_to_dict(spec.features),  # the status's warm-up
            },
            start_time=start_time,
            gap_cooldown=settings.gap_cooldown,
            retrain_spec=identity["retrain_spec"],
        )
        log.info("new %s session in %s", settings.mode, settings.db)
    else:
        store.check_same_session(identity)
        if check_data is not None:
            _check_features(spec, check_data, settings)
        store.add_event("restart", f"continuing after bar {store.cursor()}")
        log.info("continuing the session in %s after bar %s", settings.db, store.cursor())
    session = store.session() or {}
    retrainer = None
    if settings.retrain is not None and tune_config is not None:
        retrainer = SessionRetrainer(store, settings.retrain, tune_config, settings.model_path,
                                     wait=settings.feed == "replay", logger=log)  # fmt: skip
    trader = PaperTrader(
        store,
        policy,
        spec.pairs,
        spec.timeframe,
        spec.market,
        start_time=session.get("start_time"),
        gap_cooldown=int(session.get("gap_cooldown", settings.gap_cooldown)),
        source=feed.name,
        logger=log,
        features=spec.features,
        retrainer=retrainer,
    )
    if initial:
        trader.process(initial)
    return store, trader


@dataclass
class SessionProgress:
    """What one :func:`run_session` call did."""

    new_bars: int = 0
    """Closed bars taken from the feed (warm-up included)."""
    traded: int = 0
    """Bars the simulator stepped with a decision (what ``--max-bars`` counts)."""


def run_session(
    trader: PaperTrader,
    feed: Feed,
    *,
    broker: LiveBroker | None = None,
    on_update: Callable[[], None] | None = None,
    max_bars: int | None = None,
) -> SessionProgress:
    """Process the feed's bars until it ends, or until ``max_bars`` bars were traded in this
    run (bars stepped after the first decision; warm-up bars do not count)."""
    progress = SessionProgress()
    store = trader.store
    while not trader.finished and (max_bars is None or progress.traded < max_bars):
        bars = feed.next_bars(store.cursor())
        if bars is None:
            break
        report = trader.process(bars)
        progress.new_bars += report.new_bars
        progress.traded += report.stepped
        cursor = store.cursor()
        if broker is not None and report.new_bars and cursor is not None:
            broker.execute(trader, cursor)
        if on_update is not None:
            on_update()
    return progress
