"""The session's status from its database: positions, equity, today's PnL against the daily
loss limit, recent trades and events. Shown live while ``nexlify paper`` runs and printed by
``nexlify paper status``; both read the same tables, so they always agree."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table

from nexlify.config import from_dict, timeframe_seconds
from nexlify.config.strategies import StrategiesConfig
from nexlify.live.store import SessionStore
from nexlify.live.trader import recorded_features_warmup, warmup_progress
from nexlify.market.env import action_names


def _iso(t: int | None) -> str:
    if t is None:
        return "-"
    return pd.Timestamp(int(t), unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M")


def status_snapshot(store: SessionStore, recent: int = 10) -> dict[str, Any]:
    """Plain-data summary of the session (JSON-friendly)."""
    session = store.session() or {}
    cursor = store.rows("SELECT * FROM feed_cursor WHERE id = 1")
    last = store.rows("SELECT * FROM equity ORDER BY bar_time DESC LIMIT 1")
    first = store.rows("SELECT * FROM equity ORDER BY bar_time LIMIT 1")
    positions = store.rows("SELECT * FROM positions ORDER BY pair")
    for p in positions:
        close = store.rows(
            "SELECT close FROM candles WHERE pair = ? ORDER BY time DESC LIMIT 1", (p["pair"],)
        )
        p["last_close"] = close[0]["close"] if close else None
        if p["last_close"]:
            p["unrealised_pct"] = (p["last_close"] / p["entry_price"] - 1.0) * 100.0
    risk = (session.get("market_config") or {}).get("risk", {})
    limit = float(risk.get("daily_loss_limit", 0.05))
    out: dict[str, Any] = {
        "db": str(store.path),
        "mode": session.get("mode"),
        "feed": session.get("feed"),
        "pairs": session.get("pairs"),
        "timeframe": session.get("timeframe"),
        "model": session.get("model_path"),
        "last_bar": cursor[0]["last_bar_time"] if cursor else None,
        "processed_bars": cursor[0]["processed_bars"] if cursor else 0,
        "positions": positions,
        "daily_loss_limit": limit,
        "trades_total": store.rows("SELECT COUNT(*) AS n FROM trades")[0]["n"],
        "recent_trades": store.rows("SELECT * FROM trades ORDER BY id DESC LIMIT ?", (recent,)),
        "events": store.rows("SELECT * FROM events ORDER BY id DESC LIMIT 5"),
        "pending_orders": store.rows(
            "SELECT pair, side, amount, status, client_order_id FROM orders "
            "WHERE kind = 'live' AND status IN ('pending', 'unconfirmed')"
        ),
    }
    out["retrains"] = retrain_status(store, session)
    state = store.rows("SELECT pending_action FROM env_state WHERE id = 1")
    if state and session.get("pairs"):
        books = (session.get("market_config") or {}).get("strategies")
        strategies = from_dict(StrategiesConfig, books, "strategies") if books else None
        names = action_names(list(session["pairs"]), strategies)
        out["next_action"] = names[state[0]["pending_action"]]
    if not last:
        out["warmup"] = _warmup(store, session)
    if last:
        eq = last[0]
        out.update(
            equity=eq["equity"],
            cash=eq["cash"],
            locked=bool(eq["locked"]),
            start_equity=first[0]["equity"],
            day_start_equity=eq["day_start_equity"],
        )
        out["today_pnl"] = eq["equity"] - eq["day_start_equity"]
        out["today_limit"] = -limit * eq["day_start_equity"]
        out["return_pct"] = (eq["equity"] / first[0]["equity"] - 1.0) * 100.0
    return out


def retrain_status(store: SessionStore, session: dict[str, Any]) -> dict[str, Any]:
    """Rolling retraining: its settings (None: off), retrains recorded and swapped, the last
    one, and the model file trading now."""
    has_table = store.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'retrains'")
    rows = store.rows("SELECT * FROM retrains ORDER BY k") if has_table else []
    return {
        "settings": session.get("retrain_spec"),
        "count": len(rows),
        "swapped": sum(bool(r["swapped"]) for r in rows),
        "last": rows[-1] if rows else None,
        "model": rows[-1]["trading_model"] if rows else session.get("model_path"),
    }


def retrain_text(retrains: dict[str, Any]) -> str:
    """One line of the status view: how many, the last result, the model trading now."""
    last = retrains["last"]
    if last is None:
        done = "none yet"
    else:
        outcome = "swapped" if last["swapped"] else ("discarded" if last["event"] else "kept")
        scores = ", ".join(
            "n/a" if v is None else f"{v:.3f}"
            for v in (last["current_score"], last["candidate_score"])
        )
        done = (
            f"{retrains['count']} ({retrains['swapped']} swapped); last on the bars up to "
            f"{_iso(last['bar_time'])}: {outcome} (trading, candidate: {scores})"
        )
    return f"{done}; trading model {retrains['model']}"


def _warmup(store: SessionStore, session: dict[str, Any]) -> dict[str, int]:
    """Candles held by every pair and candles needed before the first decision."""
    pairs = session.get("pairs") or []
    spans = store.rows(
        "SELECT pair, MIN(time) AS first, MAX(time) AS last FROM candles GROUP BY pair"
    )
    market = session.get("market_config") or {}
    window = int((market.get("env") or {}).get("obs_window", 1))
    step = timeframe_seconds(session["timeframe"]) if session.get("timeframe") else 1
    span = None
    if pairs and len(spans) >= len(pairs):
        span = max(int(r["first"]) for r in spans), min(int(r["last"]) for r in spans)
    warmup = recorded_features_warmup(market)
    have, need = warmup_progress(span, session.get("start_time"), step, window, warmup)
    return {"have": have, "need": need}


def warmup_text(warmup: dict[str, int]) -> str:
    return f"warming up ({warmup['have']} of {warmup['need']} bars)"


def closing_line(snap: dict[str, Any], new_bars: int, traded: int) -> str:
    """The line a run of ``nexlify paper`` ends with."""
    done = f"processed {new_bars} new bars ({traded} traded)"
    if "equity" not in snap:
        return f"{done}; {warmup_text(snap['warmup'])}; not trading yet"
    return (
        f"{done}; {snap['trades_total']} closed trades; equity {snap['equity']:,.2f} "
        f"({snap['return_pct']:+.2f}% since start)"
    )


def render_status(snap: dict[str, Any]) -> RenderableType:
    """Rich tables for a :func:`status_snapshot`."""
    head = Table(
        title=f"Nexlify {snap.get('mode') or '?'} session  ({snap['db']})", show_header=False
    )
    head.add_column("what")
    head.add_column("value")
    head.add_row(
        "pairs / timeframe", f"{', '.join(snap.get('pairs') or [])} / {snap.get('timeframe')}"
    )
    head.add_row(
        "feed / last bar",
        f"{snap.get('feed')} / {_iso(snap.get('last_bar'))} ({snap.get('processed_bars')} bars)",
    )
    if "equity" in snap:
        head.add_row("equity", f"{snap['equity']:,.2f} ({snap['return_pct']:+.2f}% since start)")
        used = snap["today_pnl"] / snap["today_limit"] * 100 if snap["today_pnl"] < 0 else 0.0
        lock = "  [bold red]LOCKED: no new entries today[/]" if snap["locked"] else ""
        head.add_row(
            "today's PnL vs limit",
            f"{snap['today_pnl']:+,.2f} / "
            f"{snap['today_limit']:,.2f} ({used:.0f}% of the limit used){lock}",
        )
    else:
        head.add_row("equity", f"not trading yet: {warmup_text(snap['warmup'])}")
    head.add_row("next decision", str(snap.get("next_action", "-")))
    if snap["retrains"]["settings"] is not None:
        head.add_row("retrains", retrain_text(snap["retrains"]))
    head.add_row("closed trades", str(snap["trades_total"]))
    pos = Table(title="Open positions")
    for col in ("pair", "quantity", "entry", "since", "last close", "unrealised %"):
        pos.add_column(col, justify="right" if col != "pair" else "left")
    for p in snap["positions"]:
        pos.add_row(
            p["pair"],
            f"{p['quantity']:.6g}",
            f"{p['entry_price']:.6g}",
            _iso(p["entry_time"]),
            f"{p.get('last_close') or 0:.6g}",
            f"{p.get('unrealised_pct', 0.0):+.2f}",
        )
    trades = Table(title="Recent trades")
    for col in ("pair", "entry", "exit", "entry price", "exit price", "pnl", "reason"):
        trades.add_column(col)
    for t in snap["recent_trades"]:
        trades.add_row(
            t["pair"],
            _iso(t["entry_time"]),
            _iso(t["exit_time"]),
            f"{t['entry_price']:.6g}",
            f"{t['exit_price']:.6g}",
            f"{t['pnl']:+.2f}",
            t["reason"],
        )
    parts: list[RenderableType] = [head, pos, trades]
    if snap["pending_orders"]:
        orders = Table(title="[bold red]Live orders to check by hand[/]")
        for col in ("pair", "side", "amount", "status", "client id"):
            orders.add_column(col)
        for o in snap["pending_orders"]:
            orders.add_row(
                o["pair"], o["side"], f"{o['amount']:.6g}", o["status"], str(o["client_order_id"])
            )
        parts.append(orders)
    if snap["events"]:
        events = Table(title="Recent events")
        for col in ("at", "kind", "message"):
            events.add_column(col)
        for e in snap["events"]:
            events.add_row(e["at"], e["kind"], e["message"])
        parts.append(events)
    return Group(*parts)


def status_json(snap: dict[str, Any]) -> str:
    return json.dumps(snap, indent=2, default=str)
