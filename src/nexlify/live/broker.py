"""Guarded live trading: mirror the simulator's decisions as real market orders through ccxt.

The simulator stays the source of truth: its risk manager (position cap, Kelly size, max
concurrent trades, daily loss limit, stops) decides, exactly as in paper trading. After every
processed bar the broker asks what the simulator's positions will be once the pending decision
fills (a dry run of the same env on a flat bar at the last close) and sends the difference to
the exchange as market orders:

- the simulator will open a position the account does not hold: buy the simulator's quantity;
- the simulator holds nothing (it sold, or a stop, take-profit or the daily limit closed the
  position during the bar) but the account does: sell the whole amount bought.

Known gaps to the simulator: stop exits inside a bar reach the exchange at that bar's close (no
resting stop orders are placed), and fills happen at the market, not at the simulated price.
Set the session's ``initial_balance`` to the capital you allot: quantities are the simulator's.

Each order is written to the database as ``pending`` before it is sent and updated after; an
order still ``pending`` at start-up (crash while sending) becomes ``unconfirmed`` and its pair is
not traded live until you check it on the exchange and clear it (``nexlify paper status`` lists
it). Exchange errors are stored and logged with credentials redacted; a failed order is retried
by the next bar's reconciliation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from nexlify.errors import NexlifyError
from nexlify.live.secrets import Credentials
from nexlify.live.store import SessionStore, utc_now
from nexlify.live.trader import PaperTrader, with_placeholder_bar
from nexlify.market.env import VecMarketEnv


class LiveTradingError(NexlifyError):
    """A live order could not be placed or confirmed (message redacted)."""

    exit_code = 7


class OrderExchange(Protocol):
    """The part of a ccxt exchange that live trading uses."""

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = ...,
        params: dict[str, Any] | None = ...,
    ) -> dict[str, Any]: ...

    def fetch_balance(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OrderIntent:
    pair: str
    side: str
    amount: float


def planned_positions(trader: PaperTrader) -> dict[str, float]:
    """The simulator's position quantities once its pending decision fills (dry run)."""
    env = trader.env
    if env is None:
        return {}
    probe = VecMarketEnv(
        with_placeholder_bar(env.data), trader.config, autoreset=False, record=True
    )
    probe.load_state_dict(env.state_dict())
    probe.step(np.array([trader.pending]))
    return {pair: p["quantity"] for pair, p in probe.positions(0).items()}


class LiveBroker:
    """Sends the orders that make the exchange account follow the simulator."""

    def __init__(
        self,
        exchange: OrderExchange,
        store: SessionStore,
        credentials: Credentials,
        logger: logging.Logger | None = None,
    ) -> None:
        self.exchange = exchange
        self.store = store
        self.credentials = credentials
        self.log = logger or logging.getLogger("nexlify.paper.live")

    def __repr__(self) -> str:
        return f"LiveBroker(db={self.store.path})"

    def start(self) -> None:
        """Flag orders a crash left ``pending``; check the account answers."""
        stale = self.store.rows(
            "SELECT id, pair FROM orders WHERE kind='live' AND status='pending'"
        )
        with self.store.transaction() as c:
            for row in stale:
                c.execute(
                    "UPDATE orders SET status='unconfirmed', updated_at=? WHERE id=?",
                    (utc_now(), row["id"]),
                )
                message = (
                    f"live order {row['id']} ({row['pair']}) was being sent when the "
                    "process stopped; check it on the exchange"
                )
                self.store.add_event("unconfirmed", message, "error", None, c)
                self.log.error(message)
        try:
            balance = self.exchange.fetch_balance()
        except Exception as exc:
            raise LiveTradingError(self._describe("fetch_balance failed", exc)) from None
        free = balance.get("free") or {}
        self.log.info(
            "live account reachable; free balances: %s", {k: v for k, v in free.items() if v}
        )

    def _describe(self, what: str, exc: BaseException) -> str:
        return self.credentials.redact(f"{what}: {type(exc).__name__}: {exc}")

    def holdings(self) -> dict[str, float]:
        return {r["pair"]: r["amount"] for r in self.store.rows("SELECT * FROM live_holdings")}

    def plan(self, trader: PaperTrader) -> list[OrderIntent]:
        target = planned_positions(trader)
        held = self.holdings()
        blocked = {
            r["pair"]
            for r in self.store.rows(
                "SELECT pair FROM orders WHERE kind='live' AND status IN ('pending','unconfirmed')"
            )
        }
        intents = []
        for pair in trader.history.pairs:
            if pair in blocked:
                continue
            want, have = target.get(pair, 0.0), held.get(pair, 0.0)
            if want > 0 and have <= 0:
                intents.append(OrderIntent(pair, "buy", want))
            elif want <= 0 and have > 0:
                intents.append(OrderIntent(pair, "sell", have))
        return intents

    def execute(self, trader: PaperTrader, bar_time: int) -> list[dict[str, Any]]:
        """Send the orders for the decision just taken; returns the order rows written."""
        done = []
        for k, intent in enumerate(self.plan(trader)):
            client_id = f"nx{bar_time}{k}{intent.side[0]}"
            with self.store.transaction() as c:
                self.store.add_order(
                    c,
                    kind="live",
                    bar_time=bar_time,
                    pair=intent.pair,
                    side=intent.side,
                    amount=intent.amount,
                    status="pending",
                    client_order_id=client_id,
                )
            done.append(self._send(intent, client_id))
        return done

    def _send(self, intent: OrderIntent, client_id: str) -> dict[str, Any]:
        params = {"clientOrderId": client_id}
        try:
            reply = self.exchange.create_order(
                intent.pair, "market", intent.side, intent.amount, None, params
            )
        except Exception as exc:
            message = self._describe(f"{intent.side} {intent.pair} failed", exc)
            self.log.error(message)
            with self.store.transaction() as c:
                c.execute(
                    "UPDATE orders SET status='failed', error=?, updated_at=? "
                    "WHERE client_order_id=?",
                    (message, utc_now(), client_id),
                )
                self.store.add_event("order_failed", message, "error", None, c)
            return {"client_order_id": client_id, "status": "failed"}
        filled = float(reply.get("filled") or intent.amount)
        sign = 1.0 if intent.side == "buy" else -1.0
        with self.store.transaction() as c:
            c.execute(
                "UPDATE orders SET status='filled', exchange_order_id=?, filled=?, price=?, "
                "updated_at=? WHERE client_order_id=?",
                (
                    str(reply.get("id")),
                    filled,
                    reply.get("average") or reply.get("price"),
                    utc_now(),
                    client_id,
                ),
            )
            c.execute(
                "INSERT INTO live_holdings (pair, amount) VALUES (?, ?) ON CONFLICT(pair) "
                "DO UPDATE SET amount = max(0, amount + ?)",
                (intent.pair, max(0.0, sign * filled), sign * filled),
            )
        self.log.info(
            "live %s %s %.8g filled (order %s)", intent.side, intent.pair, filled, reply.get("id")
        )
        return {"client_order_id": client_id, "status": "filled", "filled": filled}
