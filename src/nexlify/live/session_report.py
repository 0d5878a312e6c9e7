"""HTML report of a paper (or live) trading session, read from its SQLite database."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nexlify.errors import DataError
from nexlify.live.store import SessionStore
from nexlify.report.html import figure_html, render_page, table_html


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


def paper_report_html(db_path: str | Path) -> str:
    """The session's equity, drawdown, trades on the price chart and trade table."""
    path = Path(db_path)
    if not path.is_file():
        raise DataError(f"{path}: no such session database")
    store = SessionStore(path)
    try:
        session = store.session()
        if session is None:
            raise DataError(f"{path}: the database holds no session yet")
        equity = store.rows("SELECT bar_time, equity FROM equity ORDER BY bar_time")
        trades = store.rows("SELECT * FROM trades ORDER BY exit_time")
        pairs = list(session["pairs"])
        candles = store.candles(pairs)
    finally:
        store.close()
    if not equity:
        raise DataError(f"{path}: the session has not processed a bar yet")
    values = np.array([row["equity"] for row in equity])
    curve, dd = session_equity_figures([row["bar_time"] for row in equity], values)
    sections = [
        ("Session", f"<p>{html.escape(session['mode'])} session of "
                    f"<code>{html.escape(session['model_path'])}</code> on "
                    f"{html.escape(', '.join(pairs))} ({html.escape(session['timeframe'])}), "
                    f"{len(equity)} bars processed, {len(trades)} closed trades; final equity "
                    f"{values[-1]:,.2f}.</p>"),
        ("Equity", figure_html(curve)),
        ("Drawdown", figure_html(dd)),
    ]  # fmt: skip
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
        [[t["pair"], str(pd.Timestamp(t["entry_time"], unit="s", tz="UTC")),
          str(pd.Timestamp(t["exit_time"], unit="s", tz="UTC")), f"{t['entry_price']:.4f}",
          f"{t['exit_price']:.4f}", f"{t['return'] * 100:+.2f}", f"{t['pnl']:+.2f}", t["reason"]]
         for t in trades[-200:]],
    )  # fmt: skip
    sections.append(("Closed trades (last 200)", table))
    return render_page(f"Nexlify paper session: {path.name}", sections)
