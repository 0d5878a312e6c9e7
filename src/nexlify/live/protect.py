"""Protective orders resting on the exchange: the simulator's stop-loss, trailing stop and
take-profit, so a live position stays protected between bars and while the process is down.

Levels are the simulator's (:mod:`nexlify.market.kernels`): stop = the higher of entry x (1 -
``stop_loss``) and the highest high so far x (1 - ``trailing_stop``); take-profit = entry x (1 +
``take_profit``); 0 disables one. They are sent as market orders with ccxt's unified
``stopLossPrice`` / ``takeProfitPrice`` params, rounded to the venue's tick. At each bar the stop
follows the trailing level by cancel/replace (only upwards, by at least one tick). A spot venue
that locks the amount for the stop (binance) refuses the take-profit for lack of balance: that is
said once and the take-profit then acts at bar close, as the simulator's exit. Where ccxt knows
no stop orders for the venue, nothing rests and every exit happens at bar close.
"""

from __future__ import annotations

import logging
from typing import Any

from nexlify.live.orders import PROTECTIVE, OrderDesk, OrderIntent
from nexlify.live.store import utc_now
from nexlify.live.trader import PaperTrader


def protective_levels(position: dict[str, float], risk: Any) -> dict[str, float]:
    """Trigger prices of ``position``'s protective orders for the next bar (role -> price)."""
    entry, high = position["entry_price"], position["high_water"]
    levels = {}
    stops = []
    if risk.stop_loss > 0:
        stops.append(entry * (1.0 - risk.stop_loss))
    if risk.trailing_stop > 0:
        stops.append(high * (1.0 - risk.trailing_stop))
    if stops:
        levels["stop_loss"] = max(stops)
    if risk.take_profit > 0:
        levels["take_profit"] = entry * (1.0 + risk.take_profit)
    return levels


class Protector:
    """Places, trails, cancels and watches the protective orders of the live positions."""

    def __init__(self, desk: OrderDesk, log: logging.Logger) -> None:
        self.desk = desk
        self.log = log
        self.take_profit_rests = True
        """False once the venue refused a take-profit beside a stop (balance locked)."""

    def supported(self, role: str) -> bool:
        protection = self.desk.venue.protection()
        return protection.stop_loss if role == "stop_loss" else protection.take_profit

    def protect(
        self,
        pair: str,
        bar_time: int,
        trader: PaperTrader,
        position: dict[str, float] | None = None,
    ) -> None:
        """Rest the protective orders of ``pair``'s holding (after an entry fill)."""
        from nexlify.live.broker import planned_positions

        position = position or planned_positions(trader).get(pair)
        if position is None:
            return
        for role, level in protective_levels(position, trader.config.risk).items():
            if role == "take_profit" and not self.take_profit_rests:
                continue
            if self.supported(role):
                self._place(pair, role, level, bar_time)

    def _place(self, pair: str, role: str, level: float, bar_time: int) -> dict[str, Any]:
        import ccxt

        amount = self.desk.holdings().get(pair, 0.0)
        trigger = self.desk.venue.price(pair, level)
        key = "stopLossPrice" if role == "stop_loss" else "takeProfitPrice"
        params = {key: trigger, **self.desk.trigger_params()}
        intent = OrderIntent(pair, "sell", amount, role, trigger)
        order = self.desk.send(intent, bar_time, params)
        if order["status"] == "failed" and role == "take_profit":
            error = self._last_error(order["client_order_id"])
            if ccxt.InsufficientFunds.__name__ in error:
                self.take_profit_rests = False
                message = (
                    f"{self.desk.venue.name} locks the amount for the stop-loss, so a "
                    "take-profit cannot rest beside it: take-profits act at bar close"
                )
                self.log.warning(message)
                self.desk.store.add_event("protection", message, "warning")
        return order

    def _last_error(self, cid: str) -> str:
        rows = self.desk.store.rows("SELECT error FROM orders WHERE client_order_id=?", (cid,))
        return str(rows[0]["error"] or "") if rows else ""

    def cancel_all(self, pair: str, bar_time: int) -> None:
        """Cancel ``pair``'s resting protective orders (before an exit or a flatten)."""
        for row in self.desk.open_protective(pair):
            self._cancel(row)

    def _cancel(self, row: dict[str, Any]) -> None:
        """Cancel one resting order; when the exchange refuses (it filled or is gone already:
        binance answers "Unknown order sent."), book what the exchange says it became."""
        params = self.desk.trigger_params()
        try:
            self.desk.exchange.cancel_order(row["exchange_order_id"], row["pair"], params)
        except Exception as exc:
            refusal = self.desk.describe(f"cancel {row['client_order_id']}", exc)
            try:
                order = self.desk.lookup(row)
            except Exception as again:
                order = None
                refusal += "; " + self.desk.describe("lookup", again)
            if order is None or order.get("status") == "open":
                self.desk.fail(None, refusal, "cancel_failed")
                return
            self.desk.settle(row["pair"], row["client_order_id"], order)
            return
        with self.desk.store.transaction() as c:
            c.execute(
                "UPDATE orders SET status='cancelled', updated_at=? WHERE client_order_id=?",
                (utc_now(), row["client_order_id"]),
            )

    def sync_fills(self) -> list[str]:
        """Book what the exchange did to the resting protective orders since the last bar:
        fills (their siblings are then cancelled, the rest below the minimum is dust) and
        cancellations. A protective order cancelled on the exchange, not by this session and
        not because its sibling filled, is a surprise: marked ``missing``, returned, so the
        caller blocks new entries (the next bar puts the protection back)."""
        settled = []
        for row in self.desk.open_protective():
            order = self._fetch(row)
            if order is not None and order.get("status") != "open":
                result = self.desk.settle(row["pair"], row["client_order_id"], order)
                settled.append((row, order, result["status"]))
        filled = {row["pair"] for row, _, status in settled if status == "filled"}
        for row, order, status in settled:
            if status == "filled":
                self._after_fill(row, order)
        surprises = []
        for row, _, status in settled:
            if status == "cancelled" and row["pair"] not in filled:
                surprises.append(
                    f"{row['pair']}: protective {row['role']} {row['client_order_id']} is "
                    "missing (cancelled on the exchange, not by this session)"
                )
                with self.desk.store.transaction() as c:
                    c.execute(
                        "UPDATE orders SET status='missing', updated_at=? WHERE client_order_id=?",
                        (utc_now(), row["client_order_id"]),
                    )
        return surprises

    def _fetch(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if row["exchange_order_id"] is None:
            return None
        try:
            order: dict[str, Any] = self.desk.exchange.fetch_order(
                row["exchange_order_id"], row["pair"], self.desk.trigger_params()
            )
        except Exception as exc:
            self.desk.fail(None, self.desk.describe(f"fetch {row['client_order_id']}", exc))
            return None
        return order

    def _after_fill(self, row: dict[str, Any], order: dict[str, Any]) -> None:
        message = (
            f"{row['role']} of {row['pair']} filled on the exchange at "
            f"{order.get('average') or order.get('price')}"
        )
        self.log.warning(message)
        self.desk.store.add_event("protective_fill", message, "warning")
        for sibling in self.desk.open_protective(row["pair"]):
            self._cancel(sibling)
        rest = self.desk.holdings().get(row["pair"], 0.0)
        if 0 < rest < self.desk.venue.min_amount(row["pair"]):
            self.desk.write_off_dust(row["pair"], rest)

    def trail(self, bar_time: int, trader: PaperTrader) -> None:
        """Move each resting stop up to the simulator's trailing level; re-place missing ones."""
        env = trader.env
        if env is None:
            return
        positions = env.positions(0)
        for pair, amount in self.desk.holdings().items():
            position = positions.get(pair)
            if amount <= 0 or position is None:
                continue
            resting = {r["role"]: r for r in self.desk.open_protective(pair)}
            levels = protective_levels(position, trader.config.risk)
            for role, level in levels.items():
                if role not in PROTECTIVE or not self.supported(role):
                    continue
                if role == "take_profit" and not self.take_profit_rests:
                    continue
                row = resting.get(role)
                replace = row is not None and self._should_trail(row, level)
                if row is None or (replace and self._amend(row, bar_time)):
                    self._place(pair, role, level, bar_time)

    def _should_trail(self, row: dict[str, Any], level: float) -> bool:
        """A stop moves up only, by at least one tick."""
        return (
            row["role"] == "stop_loss" and self.desk.venue.price(row["pair"], level) > row["price"]
        )

    def _amend(self, row: dict[str, Any], bar_time: int) -> bool:
        """Cancel ``row`` to replace it; False when it cannot be (filled meanwhile)."""
        if row["bar_time"] == bar_time:
            return False  # placed at this very bar: its id is taken, the next bar trails it
        self._cancel(row)
        rows = self.desk.store.rows(
            "SELECT status FROM orders WHERE client_order_id=?", (row["client_order_id"],)
        )
        return bool(rows) and rows[0]["status"] == "cancelled"
