"""Sending live orders exactly once: deterministic client ids, written before sending, looked up
after a crash.

A client order id is ``nx<session>-<bar time>-<base>-<role>``: the same decision always gets the
same id, so a restart finds the order the exchange already has instead of sending another, and
the exchange itself refuses a duplicate while the first is open. The ``orders`` row is committed
as ``pending`` before the request leaves; after the reply it becomes ``filled`` (market orders),
``open`` (resting protective orders), ``failed`` (the exchange refused) or, for a ``pending`` row
found at start-up, whatever the exchange says it is (``not_sent`` when it does not know the id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nexlify.live.secrets import Credentials
from nexlify.live.store import SessionStore, utc_now
from nexlify.live.venue import OrderRefusedError, Venue


def _network_error(exc: BaseException) -> bool:
    import ccxt

    return isinstance(exc, ccxt.NetworkError)


ROLE_CODES = {"entry": "e", "exit": "x", "stop_loss": "sl", "take_profit": "tp", "flatten": "f"}
PROTECTIVE = ("stop_loss", "take_profit")
TRIGGER_PARAMS: dict[str, dict[str, Any]] = {"kucoin": {"trigger": True}}
"""Venues that keep trigger orders in a separate book: ccxt reaches it with these params."""


@dataclass(frozen=True)
class OrderIntent:
    pair: str
    side: str
    amount: float
    role: str = "entry"
    price: float | None = None
    """Expected fill price (market orders) or trigger price (protective orders)."""


def base_fee(order: dict[str, Any], base: str) -> float:
    """Fees the exchange took in the base currency (they reduce what a buy leaves us)."""
    fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
    return sum(float(f.get("cost") or 0.0) for f in fees if f and f.get("currency") == base)


STATUSES = {
    "closed": "filled",
    "open": "open",
    "canceled": "cancelled",
    "cancelled": "cancelled",  # ccxt's kucoin says so for a stop order that will not fire
    "expired": "cancelled",
    "rejected": "failed",
}


def order_status(ccxt_status: str | None, filled: float, amount: float) -> str:
    """The orders-table status of a ccxt order. ccxt leaves the status of a triggered KuCoin
    stop order unknown (None): filled in full means filled, anything else is still open."""
    if ccxt_status is None:
        return "filled" if filled > 0 and filled >= amount * (1 - 1e-9) else "open"
    return STATUSES.get(ccxt_status, "open")


class OrderDesk:
    """The ``orders`` and ``live_holdings`` tables and the exchange calls that change them."""

    def __init__(
        self,
        exchange: Any,
        store: SessionStore,
        credentials: Credentials,
        venue: Venue,
        tag: str,
        log: logging.Logger,
    ) -> None:
        self.exchange = exchange
        self.store = store
        self.credentials = credentials
        self.venue = venue
        self.tag = tag
        self.log = log

    # ---- ids and reads -------------------------------------------------------------------
    def client_id(self, bar_time: int, pair: str, role: str) -> str:
        base = "".join(ch for ch in pair.split("/")[0] if ch.isalnum())[:8]
        return f"nx{self.tag}-{bar_time}-{base}-{ROLE_CODES[role]}"

    def trigger_params(self) -> dict[str, Any]:
        return dict(TRIGGER_PARAMS.get(self.venue.name, {}))

    def holdings(self) -> dict[str, float]:
        return {r["pair"]: r["amount"] for r in self.store.rows("SELECT * FROM live_holdings")}

    def blocked_pairs(self) -> set[str]:
        """Pairs with an order whose fate is unknown: not traded until it is settled."""
        rows = self.store.rows(
            "SELECT pair FROM orders WHERE kind='live' AND status IN ('pending','unconfirmed')"
        )
        return {r["pair"] for r in rows}

    def open_protective(self, pair: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM orders WHERE kind='live' AND status='open' AND role IN (?, ?)"
        args: tuple[Any, ...] = PROTECTIVE
        if pair is not None:
            sql, args = sql + " AND pair = ?", (*PROTECTIVE, pair)
        return self.store.rows(sql + " ORDER BY id", args)

    def describe(self, what: str, exc: BaseException) -> str:
        return self.credentials.redact(f"{what}: {type(exc).__name__}: {exc}")

    # ---- writes ------------------------------------------------------------------------
    def _record_pending(self, intent: OrderIntent, bar_time: int, cid: str) -> bool:
        """Write the order as ``pending``; False when this id was already sent (never twice)."""
        with self.store.transaction() as c:
            row = c.execute(
                "SELECT status FROM orders WHERE client_order_id = ?", (cid,)
            ).fetchone()
            if row is not None and row[0] not in ("not_sent", "failed"):
                return False
            if row is not None:
                c.execute(
                    "UPDATE orders SET status='pending', amount=?, price=?, error=NULL, "
                    "updated_at=? WHERE client_order_id=?",
                    (intent.amount, intent.price, utc_now(), cid),
                )
                return True
            self.store.add_order(
                c,
                kind="live",
                bar_time=bar_time,
                pair=intent.pair,
                side=intent.side,
                amount=intent.amount,
                price=intent.price,
                status="pending",
                client_order_id=cid,
                role=intent.role,
            )
        return True

    def _record_refused(self, intent: OrderIntent, bar_time: int, cid: str, reason: str) -> None:
        """An order refused before sending (below the venue's minimum): a row that says so."""
        self.log.error(reason)
        with self.store.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO orders (kind, bar_time, pair, side, amount, price, "
                "status, client_order_id, error, role, created_at, updated_at) "
                "VALUES ('live', ?, ?, ?, ?, ?, 'refused', ?, ?, ?, ?, ?)",
                (
                    bar_time,
                    intent.pair,
                    intent.side,
                    intent.amount,
                    intent.price,
                    cid,
                    reason,
                    intent.role,
                    utc_now(),
                    utc_now(),
                ),
            )
            self.store.add_event("order_refused", reason, "error", None, c)

    def fail(self, cid: str | None, message: str, kind: str = "order_failed") -> None:
        self.log.error(message)
        with self.store.transaction() as c:
            if cid is not None:
                c.execute(
                    "UPDATE orders SET status='failed', error=?, updated_at=? "
                    "WHERE client_order_id=?",
                    (message, utc_now(), cid),
                )
            self.store.add_event(kind, message, "error", None, c)

    def send(
        self, intent: OrderIntent, bar_time: int, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Round, check, record, send; returns ``{client_order_id, status, filled}``."""
        cid = self.client_id(bar_time, intent.pair, intent.role)
        try:
            amount = self.venue.amount(intent.pair, intent.amount, intent.price or 0.0)
        except OrderRefusedError as exc:
            self._record_refused(intent, bar_time, cid, str(exc))
            return {"client_order_id": cid, "status": "refused", "filled": 0.0}
        intent = OrderIntent(intent.pair, intent.side, amount, intent.role, intent.price)
        if not self._record_pending(intent, bar_time, cid):
            self.log.info("order %s was sent before; not sending it again", cid)
            return {"client_order_id": cid, "status": "sent_before", "filled": 0.0}
        request = {"clientOrderId": cid, **(params or {})}
        try:
            reply = self.exchange.create_order(
                intent.pair, "market", intent.side, amount, None, request
            )
        except Exception as exc:
            message = self.describe(f"{intent.role} {intent.side} {intent.pair} failed", exc)
            if _network_error(exc):
                return self._outcome_unknown(cid, message)
            self.fail(cid, message)
            return {"client_order_id": cid, "status": "failed", "filled": 0.0}
        if intent.role not in PROTECTIVE and reply.get("status") != "closed":
            try:  # some venues (kucoin) answer a market order with its id only
                reply = self.exchange.fetch_order(reply.get("id"), intent.pair)
            except Exception as exc:
                message = self.describe(f"{intent.role} {intent.pair}: fetch_order failed", exc)
                return self._outcome_unknown(cid, message)
        return self.settle(intent.pair, cid, reply)

    def with_fees(self, pair: str, order: dict[str, Any]) -> dict[str, Any]:
        """``order`` with its fees: an order looked up (not the create reply) carries none on
        binance, and a buy's base-currency fee decides what we hold."""
        if order.get("side") != "buy" or not float(order.get("filled") or 0.0):
            return order
        has = getattr(self.exchange, "has", None) or {}
        if order.get("fees") or order.get("fee") or not has.get("fetchOrderTrades"):
            return order
        trades = self.exchange.fetch_order_trades(order["id"], pair)
        fees = [t["fee"] for t in trades if t.get("fee")]
        return {**order, "fees": fees}

    def _outcome_unknown(self, cid: str, message: str) -> dict[str, Any]:
        """The request may or may not have reached the exchange: ask it by the client id.

        Not known there: ``not_sent`` (binance refuses a request older than its
        ``recvWindow``, so a lost one cannot land later). The lookup failing too:
        ``unconfirmed``, the pair is not traded until a start finds out.
        """
        row = self.store.rows("SELECT * FROM orders WHERE client_order_id = ?", (cid,))[0]
        try:
            order = self.lookup(row)
        except Exception as exc:
            self._mark(cid, "unconfirmed", message + "; " + self.describe("lookup", exc))
            return {"client_order_id": cid, "status": "unconfirmed", "filled": 0.0}
        if order is None:
            self._mark(cid, "not_sent", message + "; the exchange does not know the order")
            return {"client_order_id": cid, "status": "not_sent", "filled": 0.0}
        self.log.warning("%s; the exchange has it: %s", message, order.get("status"))
        return self.settle(row["pair"], cid, order)

    def settle(self, pair: str, cid: str, reply: dict[str, Any]) -> dict[str, Any]:
        """Store what the exchange says about order ``cid``; move the holdings by its fills."""
        row = self.store.rows("SELECT * FROM orders WHERE client_order_id = ?", (cid,))[0]
        reply = self.with_fees(pair, {**reply, "side": reply.get("side") or row["side"]})
        filled = float(reply.get("filled") or 0.0)
        status = order_status(reply.get("status"), filled, row["amount"])
        price = reply.get("average") or reply.get("price") or row["price"]
        change = (
            filled - base_fee(reply, self.venue.base(pair)) if row["side"] == "buy" else -filled
        )
        with self.store.transaction() as c:
            c.execute(
                "UPDATE orders SET status=?, exchange_order_id=?, filled=?, price=?, "
                "updated_at=? WHERE client_order_id=?",
                (status, str(reply.get("id")), filled, price, utc_now(), cid),
            )
            if filled > 0:
                c.execute(
                    "INSERT INTO live_holdings (pair, amount) VALUES (?, ?) ON CONFLICT(pair) "
                    "DO UPDATE SET amount = max(0, amount + ?)",
                    (pair, max(0.0, change), change),
                )
            if 0 < filled < row["amount"] and status != "open":
                self.store.add_event(
                    "partial_fill",
                    f"{row['role']} {row['side']} {pair}: {filled:.10g} of {row['amount']:.10g} "
                    "filled",
                    "warning",
                    None,
                    c,
                )
        self.log.info(
            "live %s %s %s %.10g: %s (order %s)",
            row["role"],
            row["side"],
            pair,
            row["amount"],
            status,
            reply.get("id"),
        )
        return {"client_order_id": cid, "status": status, "filled": filled}

    def sell_all(self, pair: str, bar_time: int, role: str) -> list[dict[str, Any]]:
        """Market-sell the holding of ``pair``; a rest below the minimum is written off as dust."""
        have = self.holdings().get(pair, 0.0)
        if have <= 0:
            return []
        price = self._last_price(pair)
        if have < self.venue.min_amount(pair) or (price and have * price < self._min_cost(pair)):
            self.write_off_dust(pair, have)
            return []
        order = self.send(OrderIntent(pair, "sell", have, role, price), bar_time)
        rest = self.holdings().get(pair, 0.0)
        if order["status"] == "filled" and 0 < rest < self.venue.min_amount(pair):
            self.write_off_dust(pair, rest)  # the part below the lot step
        return [order]

    def _min_cost(self, pair: str) -> float:
        limits = self.venue.markets.get(pair, {}).get("limits", {})
        return float((limits.get("cost") or {}).get("min") or 0.0)

    def _last_price(self, pair: str) -> float | None:
        rows = self.store.rows(
            "SELECT close FROM candles WHERE pair = ? ORDER BY time DESC LIMIT 1", (pair,)
        )
        return float(rows[0]["close"]) if rows else None

    def write_off_dust(self, pair: str, amount: float) -> None:
        """A rest too small to sell: no longer ours to trade (added to the account's baseline)."""
        base = self.venue.base(pair)
        message = (
            f"{amount:.10g} {base} of {pair} is below {self.venue.name}'s minimum: left as dust"
        )
        self.log.warning(message)
        with self.store.transaction() as c:
            c.execute("UPDATE live_holdings SET amount = 0 WHERE pair = ?", (pair,))
            c.execute(
                "INSERT INTO live_baseline (currency, amount, at) VALUES (?, ?, ?) "
                "ON CONFLICT(currency) DO UPDATE SET amount = amount + excluded.amount",
                (base, amount, utc_now()),
            )
            self.store.add_event("dust", message, "info", None, c)

    # ---- after a crash ---------------------------------------------------------------------
    def lookup(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The exchange's view of order ``row`` by its client id; None when it does not know it."""
        import ccxt

        params = {"clientOrderId": row["client_order_id"]}
        if row["role"] in PROTECTIVE:
            params.update(self.trigger_params())
        try:
            order: dict[str, Any] = self.exchange.fetch_order(None, row["pair"], params)
        except ccxt.OrderNotFound:
            return None
        return order

    def recover_pending(self) -> None:
        """Settle every ``pending`` order from the exchange's record; never resend blindly."""
        for row in self.store.rows(
            "SELECT * FROM orders WHERE kind='live' AND status IN ('pending', 'unconfirmed')"
        ):
            cid = row["client_order_id"]
            try:
                order = self.lookup(row)
            except Exception as exc:
                message = self.describe(f"order {cid} ({row['pair']}): lookup failed", exc)
                self._mark(cid, "unconfirmed", message)
                continue
            if order is None:
                self._mark(
                    cid,
                    "not_sent",
                    f"order {cid} ({row['pair']}) never reached "
                    f"{self.venue.name}; the plan decides again",
                )
                continue
            self.settle(row["pair"], cid, order)
            self.store.add_event(
                "recovered",
                f"order {cid} ({row['pair']}) found on {self.venue.name}: {order.get('status')}",
            )

    def _mark(self, cid: str, status: str, message: str) -> None:
        level = "error" if status == "unconfirmed" else "warning"
        getattr(self.log, level)(message)
        with self.store.transaction() as c:
            c.execute(
                "UPDATE orders SET status=?, error=?, updated_at=? WHERE client_order_id=?",
                (status, message, utc_now(), cid),
            )
            self.store.add_event(status, message, level, None, c)
