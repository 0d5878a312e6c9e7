"""HTML report of a paper (or live) trading session, read from its SQLite database.

Beside the equity, drawdown and trades, the report sets the session against cash and
buy-and-hold over the same bars (``session_comparison``): the basket of the session's pairs
bought at the first fill the session could have made, from the candles the session stored, with
the fees and slippage of its market config. A week or two of trading gives an interval too wide
to tell an edge from luck; the report says so, with the no-edge gate's verdict on the model.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nexlify.config import MarketConfig, from_dict
from nexlify.data.market_data import MarketData
from nexlify.errors import CheckpointError, ConfigError, DataError
from nexlify.evaluation.edge import describe_edge, read_model_edge
from nexlify.live.store import SessionStore
from nexlify.market.baselines import run_baselines
from nexlify.market.evaluate import EvaluationResult
from nexlify.market.metrics import compute_metrics
from nexlify.report.html import figure_html, metrics_table, render_page, table_html


def session_equity_figures(bar_times: list[int], equity: np.ndarray) -> tuple[go.Figure, go.Figure]:
    """Equity and drawdown (% below the running peak) of a session, one point per processed bar.

    Shared by the HTML report and the live page of ``nexlify paper serve``, so both draw the same.
    """
    times = pd.to_datetime(bar_times, unit="s", utc=True)
    curve = go.Figure(go.Scatter(x=times, y=equity, mode="lines", name="equity"))
    curve.update_layout(title="Equity", height=380)
    drawdown = (equity / np.maximum.accumulate(equity) - 1) * 100
    dd = go.Figure(go.Scatter(x=times, y=drawdown, mode="lines", fill="tozeroy", name="drawdown"))
    dd.update_layout(title="Drawdown (%)", height=300)
    return curve, dd


@dataclass(frozen=True)
class SessionRecord:
    """What a session's database holds for its report."""

    session: dict[str, Any]
    equity: list[dict[str, Any]]
    """One snapshot per processed bar, oldest first."""
    trades: list[dict[str, Any]]
    """Closed trades, by exit time."""
    candles: dict[str, np.ndarray]
    """Stored candles per pair (see ``SessionStore.candles``)."""
    retrains: list[dict[str, Any]]
    """Finished rolling retrains, in order (see ``SessionStore.retrains``)."""


def read_session(db_path: str | Path) -> SessionRecord:
    """The session, its equity snapshots, closed trades and candles; DataError when the file
    is missing or holds no session yet."""
    path = Path(db_path)
    if not path.is_file():
        raise DataError(f"{path}: no such session database")
    store = SessionStore(path)
    try:
        session = store.session()
        if session is None:
            raise DataError(f"{path}: the database holds no session yet")
        return SessionRecord(
            session=session,
            equity=store.rows("SELECT * FROM equity ORDER BY bar_time"),
            trades=store.rows("SELECT * FROM trades ORDER BY exit_time"),
            candles=store.candles(list(session["pairs"])),
            retrains=store.retrains(),
        )
    finally:
        store.close()


def paper_report_html(db_path: str | Path) -> str:
    """The session's equity, drawdown, trades on the price chart and trade table, and the
    session against cash and buy-and-hold over the same bars."""
    path = Path(db_path)
    record = read_session(path)
    session, equity, trades, candles = record.session, record.equity, record.trades, record.candles
    pairs = list(session["pairs"])
    if not equity:
        raise DataError(f"{path}: the session has not processed a bar yet")
    values = np.array([row["equity"] for row in equity])
    curve, dd = session_equity_figures([row["bar_time"] for row in equity], values)
    comparison = session_comparison(record)
    sections = [
        ("Session", f"<p>{html.escape(session['mode'])} session of "
                    f"<code>{html.escape(session['model_path'])}</code> on "
                    f"{html.escape(', '.join(pairs))} ({html.escape(session['timeframe'])}), "
                    f"{len(equity)} bars processed, {len(trades)} closed trades; final equity "
                    f"{values[-1]:,.2f}.</p>"),
        ("Against cash and buy-and-hold", _comparison_html(comparison, record)),
        ("Equity", figure_html(curve)),
        ("Drawdown", figure_html(dd)),
    ]  # fmt: skip
    if record.retrains:
        sections.append(("Rolling retraining", _retrains_html(record.retrains)))
    for pair in pairs:
        rows = candles.get(pair)
        if rows is None or len(rows) == 0:
            continue
        fig = go.Figure(go.Scatter(x=pd.to_datetime(rows[:, 0], unit="s", utc=True), y=rows[:, 4],
                                   mode="lines", name=f"{pair} close"))  # fmt: skip
        mine = [t for t in trades if t["pair"] == pair]
        if mine:
            fig.add_trace(go.Scatter(
                x=pd.to_datetime([t["entry_time"] for t in mine], unit="s", utc=True),
                y=[t["entry_price"] for t in mine], mode="markers", name="entry",
                marker={"symbol": "triangle-up", "size": 9, "color": "#2ca02c"}))  # fmt: skip
            fig.add_trace(go.Scatter(
                x=pd.to_datetime([t["exit_time"] for t in mine], unit="s", utc=True),
                y=[t["exit_price"] for t in mine], mode="markers", name="exit",
                marker={"symbol": "triangle-down", "size": 9, "color": "#d62728"}))  # fmt: skip
        fig.update_layout(title=f"{pair}: trades ({len(mine)})", height=340)
        sections.append((f"Trades: {pair}", figure_html(fig)))
    table = table_html(
        ["pair", "entry", "exit", "entry price", "exit price", "return %", "pnl", "reason"],
        [[t["pair"], _utc(t["entry_time"]), _utc(t["exit_time"]), f"{t['entry_price']:.4f}",
          f"{t['exit_price']:.4f}", f"{t['return'] * 100:+.2f}", f"{t['pnl']:+.2f}", t["reason"]]
         for t in trades[-200:]],
    )  # fmt: skip
    sections.append(("Closed trades (last 200)", table))
    return render_page(f"Nexlify paper session: {path.name}", sections)


def _utc(unix_seconds: int) -> str:
    """A bar time as the tables show it, e.g. ``2024-12-10 04:00:00+00:00``."""
    return str(pd.Timestamp(int(unix_seconds), unit="s", tz="UTC"))


def _retrains_html(retrains: list[dict[str, Any]]) -> str:
    """One row per finished retrain: when, both scores, whether the candidate took over."""

    def score(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return table_html(
        ["k", "retrain bar", "decides from", "trading model's score", "candidate's score",
         "swapped", "event"],
        [[str(r["k"]), _utc(r["bar_time"]), _utc(r["effective_time"]),
          score(r["current_score"]), score(r["candidate_score"]),
          "yes" if r["swapped"] else "no", r["event"] or ""] for r in retrains],
    )  # fmt: skip


Comparison = tuple[MarketData, dict[str, EvaluationResult]]
"""A market built from a session's stored candles, and the session, cash and buy-and-hold on it."""


def session_comparison(record: SessionRecord) -> Comparison | str:
    """The session, cash and buy-and-hold over the session's bars, as evaluation results on one
    market built from the stored candles; a string saying why when they cannot be compared.

    The session's curve is its equity snapshot per bar (the first one taken at its first
    decision, before any fill). Buy-and-hold decides at that same bar and fills at the next
    open, as the session could have; fees, slippage and the balance come from the session's
    market config. The session's fees and win rate count its closed trades only.
    """
    session, equity, trades = record.session, record.equity, record.trades
    times = np.array([row["bar_time"] for row in equity], dtype=np.int64)
    if times.size < 2:
        return "the session has processed one bar; nothing to compare yet"
    pairs = list(session["pairs"])
    prices, volume = [], []
    for pair in pairs:
        rows = record.candles.get(pair)
        if rows is None or len(rows) == 0:
            return f"no stored candles of {pair}"
        at = {int(t): k for k, t in enumerate(rows[:, 0])}
        missing = [t for t in times if int(t) not in at]
        if missing:
            return f"{len(missing)} of the session's bars have no stored {pair} candle"
        picked = rows[[at[int(t)] for t in times]]
        prices.append(picked[:, 1:5])
        volume.append(picked[:, 5])
    data = MarketData(
        pairs=tuple(pairs), timeframe=str(session["timeframe"]), time=times,
        prices=np.stack(prices, axis=1).astype(np.float32),
        volume=np.stack(volume, axis=1).astype(np.float32),
        features=np.zeros((times.size, len(pairs), 0), dtype=np.float32), feature_names=(),
        filled=np.zeros((times.size, len(pairs)), dtype=np.bool_), source="session candles",
    )  # fmt: skip
    recorded = {k: v for k, v in session["market_config"].items() if k != "features"}
    try:
        market = from_dict(MarketConfig, recorded, "market_config")  # the model's fees, balance
    except ConfigError as exc:  # e.g. a session recorded by another version
        return f"the session's recorded market settings do not load ({exc})"
    market = replace(market, env=replace(market.env, obs_window=1, episode_length=0))
    values = np.array([row["equity"] for row in equity], dtype=np.float64)
    exposure = float(np.mean([row["open_positions"] > 0 for row in equity[1:]]))
    fees = float(sum(t["fees"] for t in trades))
    metrics = compute_metrics(values, [t["pnl"] for t in trades], fees, exposure, data.timeframe)
    mine = EvaluationResult(metrics=[metrics], equity_curves=[values], trades=[list(trades)],
                            risk=[{}], starts=[0])  # fmt: skip
    baselines = run_baselines(data, market, episode_length=0, names=("cash", "buy_and_hold"))
    return data, {"session": mine, **baselines}


def _comparison_html(comparison: Comparison | str, record: SessionRecord) -> str:
    if isinstance(comparison, str):
        return f"<p class='note'>Not compared: {html.escape(comparison)}.</p>"
    data, runs = comparison
    days = (int(data.time[-1]) - int(data.time[0])) / 86_400
    try:
        edge = read_model_edge(record.session["model_path"])
        verdict = "unknown (none recorded)" if edge is None else describe_edge(edge)
    except CheckpointError as exc:
        verdict = f"unknown ({exc})"
    intro = (
        f"<p class='note'>Over the session's {days:.1f} days, from the candles it stored; "
        "buy-and-hold buys the basket of its pairs at the first fill the session could have "
        "made, with the same fees and slippage. The session's fees and win rate count closed "
        "trades only. A few weeks of days give intervals too wide to tell an edge from luck: "
        "they say how far the session is from cash, not that it will stay there.</p>"
        f"<p class='note'>The no-edge gate on the starting model's validation data: "
        f"{html.escape(verdict)}</p>"
    )
    swaps = [row for row in record.retrains if row["swapped"]]
    if swaps:
        intro += (
            f"<p class='warn'>From {_utc(swaps[0]['effective_time'])} the session traded "
            f"fine-tuned models that rolling retraining swapped in ({len(swaps)} of "
            f"{len(record.retrains)} retrains); the no-edge gate never tested them, and the "
            "out-of-sample study measured rolling retraining as worse than the frozen model.</p>"
        )
    return intro + metrics_table(runs, data)
