"""State survives SIGKILL; duplicate candles are not processed twice; feed gaps are protected."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.config import MarketConfig
from nexlify.config.strategies import StakingConfig, StrategiesConfig
from nexlify.data.market_data import build_market_data
from nexlify.evaluation.backtest import ModelSpec, backtest, load_model_for_backtest
from nexlify.live.feeds import Bar, ReplayFeed
from nexlify.live.session import SessionSettings, open_session, run_session
from nexlify.live.status import render_status, status_snapshot
from nexlify.live.store import SessionStore
from nexlify.live.trader import PaperTrader, paper_market_config
from tests.test_paper_agreement import TRADE_KEYS, db_rows, session_equity, session_trades
from tests.test_paper_support import MARKET, PAIRS, HashPolicy, candles, save_model, write_candles

REPO = Path(__file__).resolve().parents[1]


def _uninterrupted(
    model: Path, frames: dict[str, pd.DataFrame]
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Trades and equity of an uninterrupted session: the open-ended backtest (agreement)."""
    agent, spec = load_model_for_backtest(model)
    open_ended = dataclasses.replace(spec, market=paper_market_config(spec.market))
    result = backtest(agent, open_ended, build_market_data(frames, "1h", "synthetic")).model
    return [{k: t[k] for k in TRADE_KEYS} for t in result.trades[0]], result.equity_curves[0]


def _processed(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            row = conn.execute("SELECT processed_bars FROM feed_cursor").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


@pytest.mark.slow  # four process starts (torch import) of a few seconds each
def kill_at_random_moments(
    command: list[str],
    env: dict[str, str],
    db: Path,
    targets: list[int],
    rng: np.random.Generator,
    timeout: float,
) -> int:
    """Start ``command`` once per target, SIGKILL it a random moment after the session has
    processed that many bars, then let one last start finish; returns the kills made."""
    kills = 0
    for target in [*targets, None]:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if target is None:
            assert proc.wait(timeout=timeout) == 0
            break
        deadline = time.monotonic() + timeout
        while _processed(db) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.05)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    return kills


def test_sigkill_at_random_moments_then_restart_gives_the_uninterrupted_trades(
    tmp_path: Path,
) -> None:
    model = save_model(tmp_path / "model.pt")
    frames = candles()
    files = write_candles(tmp_path / "data", frames)
    args = ["--model", str(model), "--feed", "replay", "--data", *files, "--no-view"]

    db = tmp_path / "killed.db"
    command = [sys.executable, "-m", "nexlify.cli", "paper", *args, "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rng = np.random.default_rng(7)
    total = len(next(iter(frames.values())))
    # Kill points: while warming up, while trading, and late; each plus a random delay.
    targets = sorted(rng.integers(50, total - 10, size=3).tolist())
    kills = kill_at_random_moments(command, env, db, targets, rng, timeout=120)
    assert kills >= 2
    # An uninterrupted session equals the backtest (test_paper_agreement), so compare with it.
    trades, equity = _uninterrupted(model, frames)
    assert len(trades) >= 10
    assert session_trades(db) == trades
    assert np.array_equal(session_equity(db), equity)
    assert db_rows(db, "SELECT COUNT(*) AS n FROM candles")[0]["n"] == total * len(PAIRS)
    restarts = db_rows(db, "SELECT COUNT(*) AS n FROM events WHERE kind = 'restart'")
    assert restarts[0]["n"] >= kills


def _session(
    tmp_path: Path,
    name: str,
    frames: dict[str, pd.DataFrame],
    cooldown: int = 24,
    market: MarketConfig = MARKET,
    policy: Any = None,
) -> tuple[SessionStore, PaperTrader]:
    data = build_market_data(candles(), "1h", "synthetic")
    spec = ModelSpec(PAIRS, "1h", data.feature_names, paper_market_config(market))
    model = tmp_path / "model.pt"
    if not model.exists():
        save_model(model)
    settings = SessionSettings(
        db=tmp_path / name, model_path=str(model), feed="replay", gap_cooldown=cooldown
    )
    policy = HashPolicy() if policy is None else policy
    return open_session(settings, policy, spec, ReplayFeed(frames, "1h"), data)


def assert_trades_as_backtest(
    db: Path, frames: dict[str, pd.DataFrame], market: MarketConfig
) -> list[dict[str, Any]]:
    """The session in ``db`` (HashPolicy on ``frames``) has the trades and equity of the
    uninterrupted open-ended backtest; returns the trades."""
    data = build_market_data(frames, "1h", "synthetic")
    spec = ModelSpec(PAIRS, "1h", data.feature_names, paper_market_config(market))
    once = backtest(HashPolicy(), spec, data).model  # type: ignore[arg-type]
    trades = [{k: t[k] for k in TRADE_KEYS} for t in once.trades[0]]
    assert session_trades(db) == trades
    assert np.array_equal(session_equity(db), once.equity_curves[0])
    return trades


def test_a_candle_delivered_twice_is_processed_once(tmp_path: Path) -> None:
    frames = candles()
    store, trader = _session(tmp_path, "twice.db", frames)
    bars = ReplayFeed(frames, "1h").bars
    for k, bar in enumerate(bars):
        trader.process([bar])
        if k % 23 == 0:  # redelivered alone, and with the next bar
            assert trader.process([bar]).duplicates == 1
            if k + 1 < len(bars):
                report = trader.process([bar, bars[k + 1]])
                assert (report.duplicates, report.new_bars) == (1, 1)
    assert_trades_as_backtest(store.path, frames, MARKET)
    cursor = db_rows(store.path, "SELECT * FROM feed_cursor")[0]
    assert cursor["processed_bars"] == len(bars)


def test_restarts_inside_decision_intervals_keep_the_intervals(tmp_path: Path) -> None:
    """A session deciding every third bar, restarted at three bars in a row (so at least two
    restarts fall inside an interval), trades as the uninterrupted backtest."""
    frames = candles()
    market = dataclasses.replace(MARKET, env=dataclasses.replace(MARKET.env, decision_interval=3))
    bars = ReplayFeed(frames, "1h").bars
    cuts = [0, len(bars) // 2, len(bars) // 2 + 1, len(bars) // 2 + 2, len(bars)]
    for lo, hi in itertools.pairwise(cuts):
        store, trader = _session(tmp_path, "interval.db", frames, market=market)
        for bar in bars[lo:hi]:
            trader.process([bar])
    restarts = db_rows(store.path, "SELECT COUNT(*) AS n FROM events WHERE kind = 'restart'")
    assert restarts[0]["n"] == len(cuts) - 2
    trades = assert_trades_as_backtest(store.path, frames, market)
    assert len(trades) >= 10
    entries = sorted({t["entry_time"] for t in trades})
    assert all((t - entries[0]) % (3 * 3600) == 0 for t in entries)


def test_feed_gap_is_logged_filled_flat_and_blocks_new_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = candles()
    bars = ReplayFeed(frames, "1h").bars
    gap_at = len(bars) - 60
    store, trader = _session(tmp_path, "gap.db", frames, cooldown=10)
    for bar in bars[:gap_at]:
        trader.process([bar])
    trader.process([bars[gap_at + 2]])  # two bars never arrive
    gap_time = bars[gap_at].time
    events = db_rows(store.path, "SELECT * FROM events WHERE kind = 'gap'")
    assert len(events) == 1 and events[0]["bar_time"] == gap_time
    assert "2 bar(s) missing" in caplog.text
    for bar in bars[gap_at + 3 :]:
        trader.process([bar])
    # The two missing bars were stepped through flat; buys were held back for 10 bars after.
    times = [r["bar_time"] for r in db_rows(store.path, "SELECT bar_time FROM equity")]
    assert gap_time in times and gap_time + 3600 in times
    buys = db_rows(store.path, "SELECT bar_time FROM orders WHERE kind='sim' AND side='buy'")
    buy_times = [int(str(b["bar_time"])) for b in buys]
    step = 3600
    blocked = [t for t in buy_times if gap_time < t <= gap_time + 10 * step]
    assert blocked == []
    assert db_rows(store.path, "SELECT COUNT(*) AS n FROM events WHERE kind='protect'")[0]["n"] > 0
    assert any(t > gap_time + 11 * step for t in buy_times)  # trading resumes after


class StakeAlways:
    """Always the first strategy action: with two pairs and spot on, action 5 stakes."""

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray:
        return np.full(len(obs_ND), 1 + 2 * len(PAIRS), dtype=np.int64)


def test_a_strategy_action_after_a_feed_gap_is_not_held_back_as_a_buy(tmp_path: Path) -> None:
    """The gap cooldown holds back spot buys only; a strategy book's action is none (it once
    read every odd action as a buy and looked up a pair past the last one), and ``paper
    status`` names it (it once knew only the spot actions' names)."""
    staking = StrategiesConfig(enabled=("spot", "staking"), staking=StakingConfig(asset="ETH"))
    market = dataclasses.replace(MARKET, strategies=staking)
    frames = candles()
    bars = ReplayFeed(frames, "1h").bars
    store, trader = _session(tmp_path, "books.db", frames, 10, market, StakeAlways())
    gap_at = len(bars) - 60
    for bar in [*bars[:gap_at], *bars[gap_at + 2 :]]:  # two bars never arrive
        trader.process([bar])
    assert len(db_rows(store.path, "SELECT * FROM events WHERE kind = 'gap'")) == 1
    assert db_rows(store.path, "SELECT COUNT(*) AS n FROM events WHERE kind='protect'")[0]["n"] == 0
    assert trader.env is not None and trader.env.strategy_breakdown(0)["staking_reward_units"] > 0
    assert status_snapshot(store)["next_action"] == "stake ETH"


def test_status_reads_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = candles()
    store, trader = _session(tmp_path, "s.db", frames)
    run_session(trader, ReplayFeed(frames, "1h"))
    snap = status_snapshot(store)
    assert snap["trades_total"] == len(session_trades(store.path)) > 0
    assert snap["today_limit"] < 0 and "equity" in snap
    from rich.console import Console

    Console(width=140).print(render_status(snap))
    from nexlify.cli import main

    assert main(["paper", "status", "--db", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "Recent trades" in out and "today's PnL vs limit" in out
    assert main(["paper", "status", "--db", str(tmp_path / "none.db")]) == 3
    assert isinstance(SessionStore(store.path).cursor(), int)


def test_replay_bars_keep_every_pair(tmp_path: Path) -> None:
    bars = ReplayFeed(candles(), "1h").bars
    assert all(isinstance(b, Bar) and set(b.candles) == set(PAIRS) for b in bars)


@pytest.mark.slow  # several process starts (torch import) of a few seconds each
def test_live_sigkill_then_restart_never_sends_an_order_twice(tmp_path: Path) -> None:
    """Live sandbox mode against the recorded binance exchange (its state in a file that
    outlives the process): killed at random moments, restarted, the simulator still gives the
    uninterrupted trades, no client order id reaches the exchange twice and the database and
    the exchange agree at the end."""
    from tests.recorded_exchanges import BinanceBook
    from tests.test_live_exchanges import KEY, SECRET, assert_agree

    model = save_model(tmp_path / "model.pt")
    frames = candles()
    files = write_candles(tmp_path / "data", frames)
    db, state = tmp_path / "live.db", tmp_path / "exchange.json"
    command = [
        sys.executable,
        str(REPO / "tests" / "live_session_child.py"),
        str(state),
        "--",
        "--model",
        str(model),
        "--feed",
        "replay",
        "--data",
        *files,
        "--no-view",
        "--live",
        "--sandbox",
        "--db",
        str(db),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "NEXLIFY_API_KEY": KEY,
        "NEXLIFY_API_SECRET": SECRET,
    }
    rng = np.random.default_rng(11)
    total = len(next(iter(frames.values())))
    # kill points while trading (the warm-up ends 160 bars before the end)
    targets = sorted(rng.integers(total - 150, total - 10, size=3).tolist())
    kills = kill_at_random_moments(command, env, db, targets, rng, timeout=180)
    assert kills >= 2
    trades, equity = _uninterrupted(model, frames)
    assert session_trades(db) == trades
    assert np.array_equal(session_equity(db), equity)
    book = BinanceBook(KEY, SECRET, state_path=state)
    assert_agree(db, book)  # includes: no client order id on the exchange twice
    live = db_rows(db, "SELECT * FROM orders WHERE kind = 'live'")
    assert sum(o["role"] == "entry" and o["status"] == "filled" for o in live) >= 5
    assert not [o for o in live if o["status"] in ("pending", "unconfirmed")]
    # each simulator entry was bought at most once on the exchange
    entries = [(o["pair"], o["bar_time"]) for o in live if o["role"] == "entry" and o["filled"]]
    assert len(entries) == len(set(entries))


@pytest.mark.slow  # process starts and fine-tunes in background processes
def test_sigkill_during_retrains_then_restart_gives_the_uninterrupted_session(
    tmp_path: Path,
) -> None:
    """Rolling retraining in replay: killed while a retrain runs (and at a random moment),
    restarted, the session redoes only the cut retrain and ends with the uninterrupted run's
    retrains, trades and equity."""
    from nexlify.cli import main
    from nexlify.data.features import FEATURE_WARMUP
    from tests.test_paper_retrain import POINTS, RETRAIN_ARGS, START, frames, save_small_model

    model = save_small_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", frames())
    data = build_market_data(frames(), "1h", "synthetic")
    start = pd.Timestamp(int(data.time[START]), unit="s", tz="UTC").isoformat()
    args = ["paper", "--model", str(model), "--feed", "replay", "--data", *files, "--no-view",
            "--start", start, *RETRAIN_ARGS]  # fmt: skip
    whole = tmp_path / "whole.db"
    assert main([*args, "--db", str(whole)]) == 0

    db = tmp_path / "killed.db"
    command = [sys.executable, "-m", "nexlify.cli", *args, "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    rng = np.random.default_rng(5)
    # right after a retrain bar (the next bar waits for that retrain), and at a random bar
    targets = sorted([FEATURE_WARMUP + POINTS[0] + 1, FEATURE_WARMUP + POINTS[2] + 1,
                      int(rng.integers(FEATURE_WARMUP + 100, FEATURE_WARMUP + 250))])  # fmt: skip
    kills = kill_at_random_moments(command, env, db, targets, rng, timeout=240)
    assert kills >= 2
    keys = ("k", "bar_time", "effective_time", "current_score", "candidate_score", "swapped")
    cut = db_rows(db, "SELECT * FROM retrains ORDER BY k")
    full = db_rows(whole, "SELECT * FROM retrains ORDER BY k")
    assert [{k: r[k] for k in keys} for r in cut] == [{k: r[k] for k in keys} for r in full]
    assert session_trades(db) == session_trades(whole) and len(session_trades(db)) >= 5
    assert np.array_equal(session_equity(db), session_equity(whole))
    restarts = db_rows(db, "SELECT message FROM events WHERE kind = 'restart'")
    assert len(restarts) >= kills
    # at least one kill cut a retrain: killed after its bar and before the next one's record
    cut_at = {f"continuing after bar {int(data.time[p])}" for p in POINTS}
    assert cut_at & {r["message"] for r in restarts}
