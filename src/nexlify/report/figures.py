"""Plotly figures of a report: equity and drawdown against baselines, trades, score progress."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nexlify.data.market_data import CLOSE, MarketData
from nexlify.market.evaluate import EvaluationResult

COLORS = {"model": "#1f77b4", "cash": "#000000", "buy_and_hold": "#7f7f7f",
          "trend": "#9467bd", "always_long": "#8c564b", "sma_crossover": "#2ca02c",
          "random": "#d62728"}  # fmt: skip


def _times(data: MarketData, start: int, length: int) -> pd.DatetimeIndex:
    return pd.to_datetime(data.time[start : start + length], unit="s", utc=True)


def equity_figure(data: MarketData, runs: Mapping[str, EvaluationResult]) -> go.Figure:
    """Equity of each policy over the period (one continuous run each), starting at 1."""
    fig = go.Figure()
    for name, result in runs.items():
        curve = result.equity_curves[0]
        x = _times(data, result.starts[0], curve.size)
        fig.add_trace(go.Scatter(x=x, y=curve / curve[0], name=name, mode="lines",
                                 line={"color": COLORS.get(name)}))  # fmt: skip
    fig.update_layout(title="Equity (start = 1): same fees and slippage for every policy; cash, "
                            "buy_and_hold and trend trade without the risk rules",
                      yaxis_title="equity", height=420)  # fmt: skip
    return fig


def drawdown_figure(data: MarketData, runs: Mapping[str, EvaluationResult]) -> go.Figure:
    """Drawdown from the running peak, in percent."""
    fig = go.Figure()
    for name, result in runs.items():
        curve = result.equity_curves[0]
        drawdown = (curve / np.maximum.accumulate(curve) - 1.0) * 100.0
        x = _times(data, result.starts[0], curve.size)
        fig.add_trace(go.Scatter(x=x, y=drawdown, name=name, mode="lines", fill="tozeroy",
                                 line={"color": COLORS.get(name)}))  # fmt: skip
    fig.update_layout(title="Drawdown (%)", yaxis_title="%", height=320)
    return fig


def trades_figure(data: MarketData, result: EvaluationResult, pair: str) -> go.Figure:
    """Close price of ``pair`` with the model's entries and exits marked."""
    p = data.pairs.index(pair)
    x = pd.to_datetime(data.time, unit="s", utc=True)
    fig = go.Figure(go.Scatter(x=x, y=data.prices[:, p, CLOSE], name=f"{pair} close",
                               mode="lines", line={"color": "#444", "width": 1}))  # fmt: skip
    trades = [t for t in result.trades[0] if t["pair"] == pair]
    if trades:
        fig.add_trace(go.Scatter(
            x=pd.to_datetime([t["entry_time"] for t in trades], unit="s", utc=True),
            y=[t["entry_price"] for t in trades], mode="markers", name="entry",
            marker={"symbol": "triangle-up", "size": 9, "color": "#2ca02c"},
        ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=pd.to_datetime([t["exit_time"] for t in trades], unit="s", utc=True),
            y=[t["exit_price"] for t in trades], mode="markers", name="exit",
            marker={"symbol": "triangle-down", "size": 9, "color": "#d62728"},
            text=[f"{t['reason']}: {t['return'] * 100:+.2f}%" for t in trades],
            hovertemplate="%{text}<extra>exit</extra>",
        ))  # fmt: skip
    fig.update_layout(title=f"{pair}: the model's trades ({len(trades)})", height=360)
    return fig


def progress_figure(summary: Mapping[str, Any]) -> go.Figure:
    """Validation score of each initial run and retraining iteration, with the baselines."""
    runs: Sequence[Mapping[str, Any]] = summary.get("initial_runs", [])
    iterations: Sequence[Mapping[str, Any]] = summary.get("retraining_iterations", [])
    labels = [f"run_{r['run_id']}" for r in runs] + [f"iter_{i['iteration']}" for i in iterations]
    scores = [r["val_score"] for r in runs] + [i["score"] for i in iterations]
    colors = ["#1f77b4"] * len(runs) + [
        "#ff7f0e" if i.get("new_best") else "#ffbb78" for i in iterations
    ]
    fig = go.Figure(go.Bar(x=labels, y=scores, marker_color=colors, name="validation score"))
    for name, entry in summary.get("baselines", {}).items():
        fig.add_hline(y=entry["val_score"], line_dash="dot", line_color=COLORS.get(name),
                      annotation_text=name)  # fmt: skip
    fig.update_layout(title="Validation score: multi-start runs, then retraining iterations",
                      height=380)  # fmt: skip
    return fig


def history_figure(summary: Mapping[str, Any]) -> go.Figure:
    """Validation score during each run's training (every eval_every episodes)."""
    fig = go.Figure()
    units = [(f"run_{r['run_id']}", r) for r in summary.get("initial_runs", [])]
    units += [(f"iter_{i['iteration']}", i) for i in summary.get("retraining_iterations", [])]
    for label, unit in units:
        history = [h for h in unit.get("history") or [] if "val_score" in h]  # not model fits
        fig.add_trace(go.Scatter(x=[h["episode"] for h in history],
                                 y=[h["val_score"] for h in history], name=label,
                                 mode="lines+markers"))  # fmt: skip
    fig.update_layout(title="Validation score during training", xaxis_title="episode",
                      height=360)  # fmt: skip
    return fig
