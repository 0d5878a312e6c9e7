"""ccxt's REAL exchange classes with only the HTTP layer replaced by recorded responses.

ccxt's sync exchanges send every request through ``self.session.request`` (a
``requests.Session``). :class:`RecordedHTTP` stands in for that session: it routes (method,
path, query/body params) to a small order book that answers in the exchange's documented JSON
formats, from fixtures under ``tests/fixtures/exchanges/<id>/`` (markets) and templates of the
documented order, balance and error payloads. So request building, signing, precision and
response parsing are ccxt's own; the books check the signature and the exchange's filters
(lot size, tick, minimum notional) as the exchange would, and keep the account's state (which
can be saved to a JSON file, so a restarted process sees the same exchange).

(No tests here; the live test modules import from it.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import ccxt
import requests
from requests.structures import CaseInsensitiveDict

FIXTURES = Path(__file__).parent / "fixtures" / "exchanges"
TAKER_FEE = Decimal("0.001")


def _response(status: int, payload: Any, url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(payload).encode()
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    response.url = url
    response.reason = "OK" if status < 400 else "Bad Request"
    return response


class RecordedHTTP:
    """A ``requests.Session`` stand-in that answers from a book; logs every request."""

    def __init__(self, book: Any) -> None:
        self.book = book
        self.headers: dict[str, str] = {}
        self.cookies = requests.cookies.RequestsCookieJar()
        self.log: list[tuple[str, str, str, dict[str, str]]] = []
        self.fail_next: list[BaseException] = []
        """Exceptions raised (instead of answering) by the next requests: fault injection."""
        self.lose_replies = 0
        """The next N requests reach the book, but their replies are lost (read timeout)."""

    def request(
        self, method: str, url: str, data: Any = None, headers: Any = None, **_: Any
    ) -> requests.Response:
        parts = urlsplit(url)
        body = data.decode() if isinstance(data, bytes) else (data or "")
        params = dict(parse_qsl(parts.query)) | dict(parse_qsl(body))
        self.log.append((method, parts.netloc, parts.path, params))
        if self.fail_next:
            raise self.fail_next.pop(0)
        status, payload = self.book.handle(
            method, parts.path, params, dict(headers or {}), parts.query, body
        )
        self.book.save()
        if self.lose_replies:
            self.lose_replies -= 1
            raise requests.exceptions.ReadTimeout(f"read timed out: {method} {url}")
        return _response(status, payload, url)

    def close(self) -> None:
        pass


def dec(x: Any) -> Decimal:
    return Decimal(str(x))


class Book:
    """State shared by both venues: balances, orders, prices; saved as JSON when asked."""

    def __init__(
        self,
        key: str,
        secret: str,
        state_path: Path | None = None,
        balances: dict[str, str] | None = None,
    ) -> None:
        self.key, self.secret = key, secret
        self.state_path = state_path
        if state_path is not None and state_path.exists():
            self.state = json.loads(state_path.read_text())
        else:
            self.state = {
                "balances": {a: [v, "0"] for a, v in (balances or {}).items()},
                "orders": {},
                "next_id": 1000,
                "prices": {},
            }

    def save(self) -> None:
        if self.state_path is not None:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, self.state_path)

    # ---- account -----------------------------------------------------------------------
    def free(self, asset: str) -> Decimal:
        return dec(self.state["balances"].get(asset, ["0", "0"])[0])

    def total(self, asset: str) -> Decimal:
        free, locked = self.state["balances"].get(asset, ["0", "0"])
        return dec(free) + dec(locked)

    def move(self, asset: str, free: Decimal = Decimal(0), locked: Decimal = Decimal(0)) -> None:
        f, lk = self.state["balances"].get(asset, ["0", "0"])
        self.state["balances"][asset] = [str(dec(f) + free), str(dec(lk) + locked)]

    def set_price(self, symbol: str, price: float) -> None:
        self.state["prices"][symbol] = str(price)
        self.save()

    def open_orders(self) -> list[dict[str, Any]]:
        return [o for o in self.state["orders"].values() if o["status"] == "open"]

    def new_id(self) -> str:
        self.state["next_id"] += 1
        return str(self.state["next_id"])

    def fill(self, order: dict[str, Any], price: Decimal) -> None:
        """Fill ``order`` (base/quote in its record) at ``price``; fee in what is received."""
        qty = dec(order["qty"])
        base, quote = order["base"], order["quote"]
        cost = qty * price
        if order["side"] == "buy":
            self.move(quote, free=-cost)
            self.move(base, free=qty * (1 - TAKER_FEE))
            order["fee"], order["fee_asset"] = str(qty * TAKER_FEE), base
        else:
            unlock = qty if order["trigger"] else Decimal(0)
            self.move(base, free=-(qty - unlock), locked=-unlock)
            self.move(quote, free=cost * (1 - TAKER_FEE))
            order["fee"], order["fee_asset"] = str(cost * TAKER_FEE), quote
        order.update(status="filled", executed=str(qty), quote_qty=str(cost), price=str(price))

    def trade_through(self, symbol: str, low: float, high: float) -> list[str]:
        """The market trades from ``low`` to ``high``: resting triggers fire; their ids."""
        fired = []
        for order in self.open_orders():
            if order["symbol"] != symbol:
                continue
            stop = dec(order["trigger"])
            if (order["kind"] == "stop_loss" and dec(low) <= stop) or (
                order["kind"] == "take_profit" and dec(high) >= stop
            ):
                self.fill(order, stop)
                fired.append(order["id"])
        self.save()
        return fired


def binance_exchange(book: Book, *, sandbox: bool = True) -> tuple[Any, RecordedHTTP]:
    """A real ``ccxt.binance`` (spot options as the product sets them) over ``book``."""
    from nexlify.live.venue import SPOT_OPTIONS

    exchange = ccxt.binance(
        {"apiKey": book.key, "secret": book.secret, "options": dict(SPOT_OPTIONS)}
    )
    if sandbox:
        exchange.set_sandbox_mode(True)
    http = RecordedHTTP(book)
    exchange.session = http
    return exchange, http


class BinanceBook(Book):
    """Binance spot REST (api/v3) as documented: exchangeInfo, account, order, openOrders."""

    folder = FIXTURES / "binance"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.info = json.loads((self.folder / "exchangeInfo.json").read_text())
        self.symbols = {s["symbol"]: s for s in self.info["symbols"]}

    @staticmethod
    def error(code: int, msg: str) -> tuple[int, dict[str, Any]]:
        return 400, {"code": code, "msg": msg}

    def signed(self, headers: dict[str, str], raw: str) -> bool:
        payload, _, signature = raw.rpartition("&signature=")
        digest = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return headers.get("X-MBX-APIKEY") == self.key and hmac.compare_digest(digest, signature)

    def handle(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        query: str,
        body: str,
    ) -> tuple[int, Any]:
        if path == "/api/v3/exchangeInfo":
            return 200, self.info
        if path == "/api/v3/time":
            return 200, {"serverTime": 1733011200000}
        if not self.signed(headers, body or query):
            return 401, {"code": -1022, "msg": "Signature for this request is not valid."}
        route = {
            ("GET", "/api/v3/account"): self.account,
            ("POST", "/api/v3/order"): self.create,
            ("GET", "/api/v3/order"): self.query,
            ("DELETE", "/api/v3/order"): self.cancel,
            ("GET", "/api/v3/openOrders"): self.open_list,
            ("GET", "/api/v3/myTrades"): self.my_trades,
        }.get((method, path))
        if route is None:
            return 404, {"code": -1, "msg": f"not recorded: {method} {path}"}
        return route(params)

    def account(self, params: dict[str, str]) -> tuple[int, Any]:
        balances = [
            {"asset": a, "free": f"{dec(f):.8f}", "locked": f"{dec(lk):.8f}"}
            for a, (f, lk) in self.state["balances"].items()
        ]
        return 200, {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": 1733011200000,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 354937868,
        }

    def _filters(self, symbol: str) -> dict[str, dict[str, Any]]:
        return {f["filterType"]: f for f in self.symbols[symbol]["filters"]}

    def _check_filters(
        self, symbol: str, qty: Decimal, price: Decimal, trigger: Decimal | None
    ) -> tuple[int, Any] | None:
        filters = self._filters(symbol)
        lot = filters["LOT_SIZE"]
        if qty < dec(lot["minQty"]) or qty % dec(lot["stepSize"]) != 0:
            return self.error(-1013, "Filter failure: LOT_SIZE")
        if trigger is not None and trigger % dec(filters["PRICE_FILTER"]["tickSize"]) != 0:
            return self.error(-1013, "Filter failure: PRICE_FILTER")
        if qty * (trigger or price) < dec(filters["NOTIONAL"]["minNotional"]):
            return self.error(-1013, "Filter failure: NOTIONAL")
        return None

    def create(self, p: dict[str, str]) -> tuple[int, Any]:
        symbol, side, kind = p["symbol"], p["side"].lower(), p["type"]
        info = self.symbols[symbol]
        qty = dec(p["quantity"])
        price = dec(self.state["prices"][symbol])
        trigger = dec(p["stopPrice"]) if "stopPrice" in p else None
        refused = self._check_filters(symbol, qty, price, trigger)
        if refused:
            return refused
        cid = p.get("newClientOrderId") or f"x-{self.new_id()}"
        if any(o["client_id"] == cid for o in self.open_orders()):
            return self.error(-2010, "Duplicate order sent.")
        order = {
            "id": self.new_id(),
            "client_id": cid,
            "symbol": symbol,
            "side": side,
            "type": kind,
            "qty": str(qty),
            "executed": "0",
            "quote_qty": "0",
            "status": "open",
            "trigger": str(trigger) if trigger else None,
            "kind": {"STOP_LOSS": "stop_loss", "TAKE_PROFIT": "take_profit"}.get(kind),
            "base": info["baseAsset"],
            "quote": info["quoteAsset"],
            "price": "0",
            "time": 1733011200000 + int(self.state["next_id"]),
        }
        if kind == "MARKET":
            spend = qty * price if side == "buy" else qty
            if spend > self.free(order["quote"] if side == "buy" else order["base"]):
                return self.error(-2010, "Account has insufficient balance for requested action.")
            self.fill(order, price)
        elif kind in ("STOP_LOSS", "TAKE_PROFIT") and side == "sell":
            if qty > self.free(order["base"]):
                return self.error(-2010, "Account has insufficient balance for requested action.")
            self.move(order["base"], free=-qty, locked=qty)
        else:
            return self.error(-1116, "Invalid orderType.")
        self.state["orders"][order["id"]] = order
        return 200, self.full(order)

    def _find(self, p: dict[str, str]) -> dict[str, Any] | None:
        if "orderId" in p:
            return self.state["orders"].get(p["orderId"])
        return next(
            (
                o
                for o in self.state["orders"].values()
                if o["client_id"] == p.get("origClientOrderId")
            ),
            None,
        )

    def query(self, p: dict[str, str]) -> tuple[int, Any]:
        order = self._find(p)
        if order is None:
            return self.error(-2013, "Order does not exist.")
        return 200, self.record(order)

    def cancel(self, p: dict[str, str]) -> tuple[int, Any]:
        order = self._find(p)
        if order is None or order["status"] != "open":
            return self.error(-2011, "Unknown order sent.")
        order["status"] = "cancelled"
        self.move(order["base"], free=dec(order["qty"]), locked=-dec(order["qty"]))
        out = self.record(order)
        out["origClientOrderId"] = out.pop("clientOrderId")
        return 200, out

    def open_list(self, p: dict[str, str]) -> tuple[int, Any]:
        return 200, [self.record(o) for o in self.open_orders() if o["symbol"] == p["symbol"]]

    def my_trades(self, p: dict[str, str]) -> tuple[int, Any]:
        orders = [
            o
            for o in self.state["orders"].values()
            if o["status"] == "filled"
            and o["symbol"] == p["symbol"]
            and o["id"] == p.get("orderId", o["id"])
        ]
        return 200, [
            {
                "symbol": o["symbol"],
                "id": int(o["id"]) * 10,
                "orderId": int(o["id"]),
                "orderListId": -1,
                "price": f"{dec(o['price']):.8f}",
                "qty": f"{dec(o['qty']):.8f}",
                "quoteQty": f"{dec(o['quote_qty']):.8f}",
                "commission": f"{dec(o['fee']):.8f}",
                "commissionAsset": o["fee_asset"],
                "time": o["time"],
                "isBuyer": o["side"] == "buy",
                "isMaker": False,
                "isBestMatch": True,
            }
            for o in orders
        ]

    STATUS: ClassVar[dict[str, str]] = {"open": "NEW", "filled": "FILLED", "cancelled": "CANCELED"}

    def record(self, o: dict[str, Any]) -> dict[str, Any]:
        """An order as GET /api/v3/order documents it."""
        return {
            "symbol": o["symbol"],
            "orderId": int(o["id"]),
            "orderListId": -1,
            "clientOrderId": o["client_id"],
            "price": "0.00000000",
            "origQty": f"{dec(o['qty']):.8f}",
            "executedQty": f"{dec(o['executed']):.8f}",
            "cummulativeQuoteQty": f"{dec(o['quote_qty']):.8f}",
            "status": self.STATUS[o["status"]],
            "timeInForce": "GTC",
            "type": o["type"],
            "side": o["side"].upper(),
            "stopPrice": f"{dec(o['trigger'] or 0):.8f}",
            "icebergQty": "0.00000000",
            "time": o["time"],
            "updateTime": o["time"],
            "isWorking": o["status"] == "open",
            "workingTime": o["time"],
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def full(self, o: dict[str, Any]) -> dict[str, Any]:
        """An order as POST /api/v3/order documents it (newOrderRespType FULL)."""
        out = self.record(o)
        out["transactTime"] = out.pop("time")
        for key in ("stopPrice", "icebergQty", "updateTime", "isWorking", "origQuoteOrderQty"):
            out.pop(key)
        fills = []
        if o["status"] == "filled":
            fills = [
                {
                    "price": f"{dec(o['price']):.8f}",
                    "qty": f"{dec(o['qty']):.8f}",
                    "commission": f"{dec(o['fee']):.8f}",
                    "commissionAsset": o["fee_asset"],
                    "tradeId": int(o["id"]) * 10,
                }
            ]
        out["fills"] = fills
        return out
