"""Reconciliation: the exchange's balances and open orders against the session database.

Run at start and after every feed reconnect. Protective fills the exchange made meanwhile are
booked first (they are expected). Then, per base currency, the exchange's total must equal the
baseline the account held before the session (recorded, and left alone, at the first start)
plus what the database says the session bought, within the venue's minimum amount; and every
open order on the session's pairs must be one of the session's resting protective orders, and
each of those must still be open. Anything else (a position or order the database does not
know, a protective order gone missing) is recorded as an event, reported, and blocks new
entries: it is never adopted. Exits and protection still act. The block lasts until a start
whose reconciliation is clean (check the account, then start the session again).
"""

from __future__ import annotations

import logging
from typing import Any

from nexlify.live.orders import OrderDesk
from nexlify.live.protect import Protector
from nexlify.live.store import SessionStore, utc_now


def entries_blocked(store: SessionStore) -> str | None:
    """Why new live entries are blocked, or None."""
    rows = store.rows("SELECT entries_blocked FROM live_state WHERE id = 1")
    return rows[0]["entries_blocked"] if rows else None


def set_entries_blocked(store: SessionStore, reason: str | None) -> None:
    with store.transaction() as c:
        c.execute(
            "INSERT INTO live_state (id, entries_blocked, updated_at) VALUES (1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET entries_blocked = excluded.entries_blocked, "
            "updated_at = excluded.updated_at",
            (reason, utc_now()),
        )


class Reconciler:
    """Compares the account with the database; blocks entries on any surprise."""

    def __init__(self, desk: OrderDesk, protector: Protector, log: logging.Logger) -> None:
        self.desk = desk
        self.protector = protector
        self.log = log

    def reconcile(self, when: str, *, fresh_start: bool = False) -> list[str]:
        """Check the account; returns the problems found (also stored and logged)."""
        problems = self.protector.sync_fills()
        balance = self.desk.exchange.fetch_balance()
        totals = {k: float(v or 0.0) for k, v in (balance.get("total") or {}).items()}
        self._record_baseline(totals)
        problems += self._balance_problems(totals) + self._order_problems()
        if problems:
            self.block(when, problems)
        elif fresh_start:
            set_entries_blocked(self.desk.store, None)
            self.desk.store.add_event("reconcile", f"{when}: account and database agree")
        return problems

    def block(self, when: str, problems: list[str]) -> None:
        """Record and report ``problems``; block new entries."""
        store = self.desk.store
        reason = f"{when} reconciliation: " + "; ".join(problems)
        self.log.error("%s; new entries are blocked until a clean start", reason)
        with store.transaction() as c:
            for problem in problems:
                store.add_event("reconcile", f"{when}: {problem}", "error", None, c)
        set_entries_blocked(store, reason)

    def _bases(self) -> dict[str, list[str]]:
        bases: dict[str, list[str]] = {}
        for pair in self.desk.venue.pairs:
            bases.setdefault(self.desk.venue.base(pair), []).append(pair)
        return bases

    def _record_baseline(self, totals: dict[str, float]) -> None:
        """At the first start, what the account already holds is recorded and left alone."""
        store = self.desk.store
        if store.rows("SELECT currency FROM live_baseline LIMIT 1"):
            return
        if store.rows("SELECT id FROM orders WHERE kind='live' LIMIT 1"):
            return  # a session that traded before baselines existed: compare with zero
        with store.transaction() as c:
            for base in self._bases():
                amount = totals.get(base, 0.0)
                c.execute(
                    "INSERT INTO live_baseline (currency, amount, at) VALUES (?, ?, ?)",
                    (base, amount, utc_now()),
                )
                if amount > 0:
                    store.add_event(
                        "baseline",
                        f"the account held {amount:.10g} {base} before the session: "
                        "left alone, never traded",
                        "info",
                        None,
                        c,
                    )

    def _balance_problems(self, totals: dict[str, float]) -> list[str]:
        baseline = {
            r["currency"]: r["amount"] for r in self.desk.store.rows("SELECT * FROM live_baseline")
        }
        held = self.desk.holdings()
        problems = []
        for base, pairs in self._bases().items():
            expected = baseline.get(base, 0.0) + sum(held.get(p, 0.0) for p in pairs)
            actual = totals.get(base, 0.0)
            tolerance = max(self.desk.venue.min_amount(p) for p in pairs) or 1e-12
            if abs(actual - expected) > tolerance:
                problems.append(
                    f"{base}: {self.desk.venue.name} holds {actual:.10g}, the database "
                    f"expects {expected:.10g} (baseline + session positions)"
                )
        return problems

    def _open_orders(self, pair: str) -> list[dict[str, Any]]:
        orders = list(self.desk.exchange.fetch_open_orders(pair))
        trigger = self.desk.trigger_params()
        if trigger:
            orders += list(self.desk.exchange.fetch_open_orders(pair, None, None, trigger))
        return orders

    def _order_problems(self) -> list[str]:
        problems = []
        for pair in self.desk.venue.pairs:
            ours = {r["client_order_id"]: r for r in self.desk.open_protective(pair)}
            seen = set()
            for order in self._open_orders(pair):
                cid = order.get("clientOrderId")
                if cid in ours:
                    seen.add(cid)
                else:
                    problems.append(
                        f"{pair}: open order {order.get('id')} ({cid}) that the database "
                        "does not know"
                    )
            for cid, row in ours.items():
                if cid not in seen:
                    problems.append(f"{pair}: protective {row['role']} {cid} is missing")
                    with self.desk.store.transaction() as c:
                        c.execute(
                            "UPDATE orders SET status='missing', updated_at=? "
                            "WHERE client_order_id=?",
                            (utc_now(), cid),
                        )
        return problems
