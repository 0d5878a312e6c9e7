"""Paper trading agrees with the backtest: same trades, same equity, over the same bars."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexlify.cli import main
from nexlify.data.market_data import build_market_data
from nexlify.evaluation.backtest import ModelSpec, backtest, load_model_for_backtest
from nexlify.live.feeds import ReplayFeed
from nexlify.live.session import SessionSettings, open_session, run_session
from nexlify.live.trader import paper_market_config
from tests.test_paper_support import MARKET, PAIRS, HashPolicy, candles, save_model, write_candles

TRADE_KEYS = ("pair", "entry_time", "exit_time", "entry_price", "exit_price", "quantity", "pnl",
              "return", "fees", "reason")  # fmt: skip


def db_rows(db: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def session_trades(db: Path) -> list[dict[str, Any]]:
    return [{k: r[k] for k in TRADE_KEYS} for r in db_rows(db, "SELECT * FROM trades ORDER BY id")]


def session_equity(db: Path) -> np.ndarray:
    rows = db_rows(db, "SELECT equity FROM equity ORDER BY bar_time")
    return np.array([r["equity"] for r in rows])


def test_cli_replay_equals_the_backtest_of_the_same_model(tmp_path: Path) -> None:
    """The backtest runs with close_at_end=False (a paper session never liquidates at the end):
    then every trade and the equity at every bar are identical, float for float. Against the
    default backtest (which sells everything at the last close) the trades closed before the
    last bar and the equity at every bar before the last are identical."""
    model = save_model(tmp_path / "model.pt")
    frames = candles()
    files = write_candles(tmp_path / "data", frames)
    db = tmp_path / "paper.db"
    code = main(["paper", "--model", str(model), "--feed", "replay", "--data", *files,
                 "--db", str(db), "--no-view"])  # fmt: skip
    assert code == 0
    agent, spec = load_model_for_backtest(model)
    data = build_market_data(frames, "1h", "synthetic")
    open_ended = dataclasses.replace(spec, market=paper_market_config(spec.market))
    reference = backtest(agent, open_ended, data).model
    trades = session_trades(db)
    assert len(trades) >= 10
    assert trades == [{k: t[k] for k in TRADE_KEYS} for t in reference.trades[0]]
    equity = session_equity(db)
    assert equity.shape == (data.n_bars - MARKET.env.obs_window + 1,)
    assert np.array_equal(equity, reference.equity_curves[0])
    # The default backtest liquidates at the last close; everything before it is the same.
    default = backtest(agent, spec, data).model
    last_time = int(data.time[-1])
    before_end = [{k: t[k] for k in TRADE_KEYS} for t in default.trades[0]
                  if t["exit_time"] < last_time]  # fmt: skip
    assert [t for t in trades if t["exit_time"] < last_time] == before_end
    assert np.array_equal(equity[:-1], default.equity_curves[0][:-1])


def test_replay_of_a_period_with_a_start_equals_the_backtest_of_that_period(
    tmp_path: Path,
) -> None:
    """A busier policy, two pairs, and ``--start``: the backtest of the same period agrees."""
    frames = candles()
    data = build_market_data(frames, "1h", "synthetic")
    start = int(data.time[40])
    spec = ModelSpec(PAIRS, "1h", data.feature_names, paper_market_config(MARKET))
    model = save_model(tmp_path / "model.pt")  # identity of the session; HashPolicy trades
    settings = SessionSettings(db=tmp_path / "p.db", model_path=str(model), feed="replay",
                               start_time=start)  # fmt: skip
    feed = ReplayFeed(frames, "1h")
    store, trader = open_session(settings, HashPolicy(), spec, feed, data)
    run_session(trader, feed)
    store.close()
    reference = backtest(HashPolicy(), spec, data.slice(40, data.n_bars)).model  # type: ignore[arg-type]
    trades = session_trades(settings.db)
    assert len(trades) >= 20
    assert trades == [{k: t[k] for k in TRADE_KEYS} for t in reference.trades[0]]
    assert np.array_equal(session_equity(settings.db), reference.equity_curves[0])


def test_model_with_other_features_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", candles())
    db = tmp_path / "p.db"
    args = ["paper", "--model", str(model), "--feed", "replay", "--db", str(db), "--no-view"]
    assert main([*args, "--data", files[0]]) == 2  # one file for a two-pair model
    assert main([*args, "--data", *files, "--timeframe", "4h"]) == 2
    spec = load_model_for_backtest(model)[1]
    other = dataclasses.replace(spec, feature_names=(*spec.feature_names[:-1], "other"))
    frames = candles()
    data = build_market_data(frames, "1h", "synthetic")
    settings = SessionSettings(db=db, model_path=str(model), feed="replay")
    with pytest.raises(Exception, match="expects features"):
        open_session(settings, HashPolicy(), other, ReplayFeed(frames, "1h"), data)
    assert db_rows(db, "SELECT * FROM session") == []


def test_warm_up_progress_by_hand() -> None:
    from nexlify.data.features import FEATURE_WARMUP
    from nexlify.live.trader import warmup_progress

    hour = 3600
    need = FEATURE_WARMUP + 2  # the features' warm-up, then MarketData's two bars
    assert warmup_progress(None, None, hour, 1) == (0, need)
    assert warmup_progress((0, 99 * hour), None, hour, 1) == (100, need)
    assert warmup_progress((0, 99 * hour), None, hour, 5) == (100, FEATURE_WARMUP + 5)
    # a start 400 bars in: every bar before it, then the decision bar itself
    assert warmup_progress((0, 0), 400 * hour, hour, 1) == (1, 401)
    assert warmup_progress((0, 0), 400 * hour + 1, hour, 1) == (1, 402)  # the next bar's open
