"""The exchange side of live trading: sandbox mode, the venue's markets, precision and minimums.

Everything here goes through ccxt's own rules (``set_sandbox_mode``, ``load_markets``,
``amount_to_precision``, ``price_to_precision``, ``markets[symbol]['limits']``), so an order
the exchange would reject for its size or tick is refused here first, with the pair and the
limit named, and nothing is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nexlify.errors import ConfigError, NexlifyError

SPOT_OPTIONS: dict[str, Any] = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}}
"""ccxt options for live trading: spot markets only (no margin or futures market lists)."""


class LiveTradingError(NexlifyError):
    """A live order could not be placed or confirmed (message redacted)."""

    exit_code = 7


class OrderRefusedError(LiveTradingError):
    """An order was refused before sending: below the venue's minimum, or no such market."""


def enable_sandbox(exchange: Any) -> None:
    """Switch ``exchange`` to its testnet; refuse, naming it, where ccxt knows none."""
    import ccxt

    has_test = bool((getattr(exchange, "urls", None) or {}).get("test"))
    try:
        if not has_test:  # ccxt would fail on the missing url (TypeError in some versions)
            raise ccxt.NotSupported(exchange.id)
        exchange.set_sandbox_mode(True)
    except ccxt.NotSupported:
        raise ConfigError(
            f"--sandbox: {exchange.id} has no sandbox/testnet in ccxt (no urls['test']); "
            "choose an exchange with one (e.g. binance, kucoin, okx, bybit) or trade without "
            "--sandbox"
        ) from None


@dataclass(frozen=True)
class Protection:
    """Which protective orders the venue can rest on its book (ccxt's ``has`` flags)."""

    stop_loss: bool
    take_profit: bool

    def describe(self, venue: str) -> str:
        kinds = [
            k for k, on in (("stop-loss", self.stop_loss), ("take-profit", self.take_profit)) if on
        ]
        if not kinds:
            return (
                f"{venue} supports no resting stop orders through ccxt: stops and take-profits "
                "act at bar close only"
            )
        return f"{venue}: {' and '.join(kinds)} orders rest on the exchange after each entry"


class Venue:
    """One exchange's spot markets for the session's pairs, checked before any order."""

    def __init__(self, exchange: Any, pairs: tuple[str, ...], logger: logging.Logger | None = None):
        self.exchange = exchange
        self.pairs = pairs
        self.log = logger or logging.getLogger("nexlify.paper.live")
        self.markets: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return str(getattr(self.exchange, "id", "exchange"))

    def load(self) -> None:
        """Load the markets; refuse a pair the venue does not list as an active spot market."""
        markets = self.exchange.load_markets()
        for pair in self.pairs:
            market = markets.get(pair)
            if market is None:
                raise ConfigError(
                    f"{self.name} has no market {pair}; the model trades "
                    f"{', '.join(self.pairs)}: choose a venue that lists them (--exchange)"
                )
            if market.get("spot") is False or market.get("active") is False:
                raise ConfigError(f"{self.name}: {pair} is not an active spot market")
            self.markets[pair] = market

    def protection(self) -> Protection:
        has = getattr(self.exchange, "has", {}) or {}
        return Protection(
            bool(has.get("createStopLossOrder")), bool(has.get("createTakeProfitOrder"))
        )

    def base(self, pair: str) -> str:
        return str(self.markets[pair]["base"]) if pair in self.markets else pair.split("/")[0]

    def min_amount(self, pair: str) -> float:
        limits = self.markets.get(pair, {}).get("limits", {})
        return float((limits.get("amount") or {}).get("min") or 0.0)

    def amount(self, pair: str, amount: float, price: float) -> float:
        """``amount`` truncated to the market's precision; refused below a minimum.

        ``price`` is the expected fill (or trigger) price, for the minimum-cost check.
        """
        import ccxt

        try:
            rounded = float(self.exchange.amount_to_precision(pair, amount))
        except ccxt.InvalidOrder:  # ccxt: the amount rounds to zero
            rounded = 0.0
        limits = self.markets[pair].get("limits", {})
        least = (limits.get("amount") or {}).get("min")
        if rounded <= 0 or (least is not None and rounded < float(least)):
            raise OrderRefusedError(
                f"{self.name} {pair}: amount {amount:.10g} is below the minimum amount "
                f"{least} (after rounding to the market's precision: {rounded:.10g})"
            )
        least_cost = (limits.get("cost") or {}).get("min")
        if least_cost is not None and rounded * price < float(least_cost):
            raise OrderRefusedError(
                f"{self.name} {pair}: order value {rounded * price:.2f} is below the minimum "
                f"cost {least_cost} (amount {rounded:.10g} at {price:.10g})"
            )
        return rounded

    def price(self, pair: str, price: float) -> float:
        """``price`` rounded to the market's tick."""
        return float(self.exchange.price_to_precision(pair, price))


def check_position_size(venue: Venue, market: Any, last_close: dict[str, float]) -> None:
    """Refuse to start when the simulator's largest position (``max_position`` of the starting
    balance) would still be below a pair's minimum amount or cost on the venue: every entry
    would be refused."""
    budget = market.risk.max_position * market.execution.initial_balance
    for pair in venue.pairs:
        price = last_close.get(pair)
        if price:
            try:
                venue.amount(pair, budget / price, price)
            except OrderRefusedError as exc:
                raise OrderRefusedError(
                    f"{exc}; the model's largest position is max_position "
                    f"{market.risk.max_position} x initial_balance "
                    f"{market.execution.initial_balance:g} = {budget:g}: raise the capital "
                    "allotted or trade a venue with smaller minimums"
                ) from None
