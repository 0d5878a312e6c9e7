"""Guarded live trading: mirror the simulator's decisions as real orders through ccxt.

The simulator stays the source of truth: its risk manager (position cap, Kelly size, max
concurrent trades, daily loss limit, stops) decides, exactly as in paper trading. After every
processed bar the broker asks what the simulator's positions will be once the pending decision
fills (a dry run of the same env on a flat bar at the last close) and makes the account follow:

- the simulator will open a position the account does not hold: market-buy its quantity, then
  rest a stop-loss (and a take-profit where the venue accepts both) on the exchange at the
  simulator's levels (:mod:`nexlify.live.protect`), so the position stays protected between
  bars and while this process is down; the stop follows the trailing level by cancel/replace;
- the simulator holds nothing (it sold, or a stop, take-profit or the daily limit closed the
  position) but the account does: cancel the protective orders, then market-sell what is left.

Every order gets a deterministic client order id (session, bar, pair, role) and is written to
the database as ``pending`` BEFORE it is sent. A ``pending`` order found at start-up (crash while
sending) is looked up on the exchange by that id: adopted when the exchange has it, marked
``not_sent`` when it has not; it is never sent a second time blindly. Amounts and prices follow
the venue's precision and minimums (:mod:`nexlify.live.venue`). Reconciliation at start and after
a feed reconnect (:mod:`nexlify.live.reconcile`) blocks new entries when the account holds
something the database does not know. Exchange errors are stored and logged with credentials
redacted; a failed entry is retried by the next bar's plan.

Set the session's ``initial_balance`` to the capital you allot: quantities are the simulator's.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Protocol

import numpy as np

from nexlify.live.control import pending_stop
from nexlify.live.orders import OrderDesk, OrderIntent
from nexlify.live.protect import Protector
from nexlify.live.reconcile import Reconciler, entries_blocked
from nexlify.live.secrets import Credentials
from nexlify.live.store import SessionStore
from nexlify.live.trader import PaperTrader, with_placeholder_bar
from nexlify.live.venue import LiveTradingError, OrderRefusedError, Venue
from nexlify.market.env import VecMarketEnv

__all__ = [
    "LiveBroker",
    "LiveTradingError",
    "OrderIntent",
    "OrderRefusedError",
    "planned_positions",
]


class FeedWithRetries(Protocol):
    retries: int


def planned_positions(trader: PaperTrader) -> dict[str, dict[str, float]]:
    """The simulator's positions once its pending decision fills (dry run), each with the
    ``entry_time`` (unix s) of the bar it was entered at."""
    env = trader.env
    if env is None:
        return {}
    probe = VecMarketEnv(
        with_placeholder_bar(env.data), trader.step_config, autoreset=False, record=True
    )
    probe.load_state_dict(env.state_dict())
    probe.step(np.array([trader.pending]))
    positions = probe.positions(0)
    for position in positions.values():
        position["entry_time"] = float(probe.data.time[int(position["entry_bar"])])
    return positions


def session_tag(store: SessionStore) -> str:
    """Six hex digits naming this session in client order ids (two sessions never collide)."""
    session = store.session() or {}
    text = f"{session.get('created_at')}|{session.get('model_sha256')}|{store.path.name}"
    return hashlib.sha256(text.encode()).hexdigest()[:6]


class LiveBroker:
    """Sends the orders that make the exchange account follow the simulator."""

    def __init__(
        self,
        exchange: Any,
        store: SessionStore,
        credentials: Credentials,
        logger: logging.Logger | None = None,
        *,
        venue: Venue | None = None,
        feed: object | None = None,
    ) -> None:
        self.exchange = exchange
        self.store = store
        self.credentials = credentials
        self.log = logger or logging.getLogger("nexlify.paper.live")
        pairs = tuple((store.session() or {}).get("pairs", ()))
        self.venue = venue or Venue(exchange, pairs, self.log)
        self.desk = OrderDesk(
            exchange, store, credentials, self.venue, session_tag(store), self.log
        )
        self.protector = Protector(self.desk, self.log)
        self.reconciler = Reconciler(self.desk, self.protector, self.log)
        self.feed = feed
        self._retries_seen = int(getattr(feed, "retries", 0))

    def __repr__(self) -> str:
        return f"LiveBroker(db={self.store.path})"

    def start(self, trader: PaperTrader | None = None) -> None:
        """Load the venue's markets, settle orders a crash left ``pending`` (looked up by their
        client order id), reconcile the account with the database, then send what the last
        processed bar asked for and a crash may have left unsent."""
        if not self.venue.markets:
            self.venue.load()
        protection = self.venue.protection()
        message = protection.describe(self.venue.name)
        self.log.info(message)
        self.store.add_event("protection", message)
        self.desk.recover_pending()
        self.reconciler.reconcile("start", fresh_start=True)
        cursor = self.store.cursor()
        if pending_stop(self.store) is not None:
            return  # a stop request waits: no order before it is carried out
        if trader is not None and cursor is not None and trader.env is not None:
            self.execute(trader, cursor)

    def holdings(self) -> dict[str, float]:
        return self.desk.holdings()

    def plan(self, trader: PaperTrader) -> list[OrderIntent]:
        """Orders that make the account follow the simulator's planned positions."""
        target = planned_positions(trader)
        held = self.holdings()
        blocked = self.desk.blocked_pairs()
        no_entries = entries_blocked(self.store)
        intents = []
        for pair in trader.history.pairs:
            if pair in blocked:
                continue
            want = target.get(pair, {}).get("quantity", 0.0)
            have = held.get(pair, 0.0)
            if want > 0 and have <= 0 and not no_entries:
                decided = int(target[pair]["entry_time"]) - trader.history.step
                if not self._mirrored(pair, decided):
                    price = target[pair]["entry_price"]
                    intents.append(OrderIntent(pair, "buy", want, "entry", price))
            elif want <= 0 and have > 0:
                intents.append(OrderIntent(pair, "sell", have, "exit", None))
        return intents

    def _mirrored(self, pair: str, decided: int) -> bool:
        """Whether the simulator's position decided at ``decided`` was already bought live (it
        may be gone since: stopped out on the exchange, or flattened by the kill switch; either
        way it is not bought again), or refused as below the venue's minimum (asking again
        each bar would not change the answer)."""
        return bool(
            self.store.rows(
                "SELECT id FROM orders WHERE kind='live' AND role='entry' AND pair=? "
                "AND bar_time>=? AND (filled>0 OR status='refused') LIMIT 1",
                (pair, decided),
            )
        )

    def execute(self, trader: PaperTrader, bar_time: int) -> list[dict[str, Any]]:
        """Send the orders for the decision just taken; returns the order rows written."""
        retries = int(getattr(self.feed, "retries", 0))
        if retries > self._retries_seen:
            self._retries_seen = retries
            self.reconciler.reconcile("reconnect")
        surprises = self.protector.sync_fills()
        if surprises:
            self.reconciler.block("bar", surprises)
        done = []
        for intent in self.plan(trader):
            if intent.role == "exit":
                self.protector.cancel_all(intent.pair, bar_time)
                done += self.desk.sell_all(intent.pair, bar_time, "exit")
            else:
                order = self.desk.send(intent, bar_time)
                done.append(order)
                if order["status"] == "filled":
                    self.protector.protect(intent.pair, bar_time, trader)
        self.protector.trail(bar_time, trader)
        return done

    def flatten(self, bar_time: int) -> list[dict[str, Any]]:
        """Kill switch: cancel every protective order, then market-sell every holding."""
        done: list[dict[str, Any]] = []
        for pair, amount in self.holdings().items():
            if amount <= 0:
                continue
            self.protector.cancel_all(pair, bar_time)
            done += self.desk.sell_all(pair, bar_time, "flatten")
        return done
