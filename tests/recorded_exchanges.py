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

import base64
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
        """Resting orders, stop-losses first (the stop wins when both are touched in a bar)."""
        orders = [o for o in self.state["orders"].values() if o["status"] == "open"]
        return sorted(orders, key=lambda o: o["kind"] != "stop_loss")

    def new_id(self) -> str:
        self.state["next_id"] += 1
        return str(self.state["next_id"])

    buy_fee_in_base = True
    """Binance takes a buy's fee from the coins bought; KuCoin takes every fee in the quote."""

    @staticmethod
    def market_id(pair: str) -> str:
        return pair.replace("/", "")

    def fill(self, order: dict[str, Any], price: Decimal) -> None:
        """Fill ``order`` (base/quote in its record) at ``price``; fee in what is received."""
        qty = dec(order["qty"])
        base, quote = order["base"], order["quote"]
        cost = qty * price
        if order["side"] == "buy" and not self.buy_fee_in_base:
            self.move(quote, free=-cost * (1 + TAKER_FEE))
            self.move(base, free=qty)
            order["fee"], order["fee_asset"] = str(cost * TAKER_FEE), quote
        elif order["side"] == "buy":
            self.move(quote, free=-cost)
            self.move(base, free=qty * (1 - TAKER_FEE))
            order["fee"], order["fee_asset"] = str(qty * TAKER_FEE), base
        else:
            unlock = qty if order["trigger"] and order["locks"] else Decimal(0)
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
                if not order["locks"] and self.free(order["base"]) < dec(order["qty"]):
                    order["status"] = "cancelled"  # triggered without the coins: it fails
                    continue
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
            "locks": True,
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


def kucoin_exchange(book: Book) -> tuple[Any, RecordedHTTP]:
    """A real ``ccxt.kucoin`` (spot options as the product sets them) over ``book``.

    KuCoin has no sandbox in ccxt any more (``urls['test']`` is None), so this is its live API.
    """
    from nexlify.live.venue import SPOT_OPTIONS

    exchange = ccxt.kucoin(
        {
            "apiKey": book.key,
            "secret": book.secret,
            "password": KUCOIN_PASSPHRASE,
            "options": dict(SPOT_OPTIONS),
        }
    )
    http = RecordedHTTP(book)
    exchange.session = http
    return exchange, http


KUCOIN_PASSPHRASE = "nx-passphrase-4c1e"


class KucoinBook(Book):
    """KuCoin classic spot REST as documented: symbols, accounts, orders and stop orders (which
    do not freeze the coins until they trigger)."""

    folder = FIXTURES / "kucoin"
    buy_fee_in_base = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.symbols = {s["symbol"]: s for s in self.fixture("symbols.json")["data"]}

    @staticmethod
    def market_id(pair: str) -> str:
        return pair.replace("/", "-")

    def fixture(self, name: str) -> Any:
        return json.loads((self.folder / name).read_text())

    @staticmethod
    def ok(data: Any) -> tuple[int, Any]:
        return 200, {"code": "200000", "data": data}

    @staticmethod
    def error(code: str, msg: str) -> tuple[int, Any]:
        return 400, {"code": code, "msg": msg}

    def signed(self, method: str, path: str, query: str, body: str, h: dict[str, str]) -> bool:
        endpoint = path + ("?" + query if query else "")
        text = h.get("KC-API-TIMESTAMP", "") + method + endpoint + body
        passphrase = base64.b64encode(
            hmac.new(self.secret.encode(), KUCOIN_PASSPHRASE.encode(), hashlib.sha256).digest()
        ).decode()
        sign = base64.b64encode(
            hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).digest()
        ).decode()
        return (
            h.get("KC-API-KEY") == self.key
            and h.get("KC-API-SIGN") == sign
            and h.get("KC-API-PASSPHRASE") == passphrase
        )

    def handle(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        query: str,
        body: str,
    ) -> tuple[int, Any]:
        public = {
            "/api/v3/currencies": lambda: (200, self.fixture("currencies.json")),
            "/api/v2/symbols": lambda: (200, self.fixture("symbols.json")),
            "/api/v1/market/allTickers": lambda: self.ok({"time": 1733011200000, "ticker": []}),
            "/api/v1/timestamp": lambda: self.ok(1733011200000),
        }
        if method == "GET" and path in public:
            return public[path]()
        if not self.signed(method, path, query, body, headers):
            return 401, {"code": "400005", "msg": "Invalid KC-API-SIGN"}
        if body:
            params = {**params, **json.loads(body)}
        return self.private(method, path, params)

    def private(self, method: str, path: str, p: dict[str, Any]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if (method, path) == ("GET", "/api/ua/v1/account/mode"):
            return self.ok({"selfAccountMode": "CLASSIC"})
        if (method, path) == ("GET", "/api/v3/margin/symbols"):
            return self.ok({"timestamp": 1733011200000, "items": []})
        if (method, path) == ("GET", "/api/v1/isolated/symbols"):
            return self.ok([])
        if (method, path) == ("GET", "/api/v1/hf/accounts/opened"):
            return self.ok(False)
        if (method, path) == ("GET", "/api/v1/accounts"):
            return self.ok(
                [
                    {
                        "id": f"acc{k}",
                        "currency": a,
                        "type": "trade",
                        "balance": str(dec(f) + dec(lk)),
                        "available": str(dec(f)),
                        "holds": str(dec(lk)),
                    }
                    for k, (a, (f, lk)) in enumerate(self.state["balances"].items())
                ]
            )
        if method == "POST" and path in ("/api/v1/orders", "/api/v1/stop-order"):
            return self.create(p, trigger=path.endswith("stop-order"))
        if method == "GET" and path in ("/api/v1/orders", "/api/v1/stop-order"):
            trigger = path.endswith("stop-order")
            items = [
                self.record(o)
                for o in self.open_orders()
                if o["symbol"] == p.get("symbol") and bool(o["kind"]) == trigger
            ]
            return self.ok(
                {
                    "currentPage": 1,
                    "pageSize": 50,
                    "totalNum": len(items),
                    "totalPage": 1,
                    "items": items,
                }
            )
        if parts[:3] == ["api", "v1", "order"] and parts[3:4] == ["client-order"]:
            return self.found(
                next(
                    (
                        o
                        for o in self.state["orders"].values()
                        if o["client_id"] == parts[4] and not o["kind"]
                    ),
                    None,
                )
            )
        if path == "/api/v1/stop-order/queryOrderByClientOid":
            order = next(
                (
                    o
                    for o in self.state["orders"].values()
                    if o["client_id"] == p.get("clientOid") and o["kind"]
                ),
                None,
            )
            return self.ok([self.record(order)]) if order else self.ok([])
        if parts[:3] in (["api", "v1", "orders"], ["api", "v1", "stop-order"]) and len(parts) == 4:
            order = self.state["orders"].get(parts[3])
            if method == "DELETE":
                return self.cancel(order)
            return self.found(order)
        return 404, {"code": "404000", "msg": f"not recorded: {method} {path}"}

    def found(self, order: dict[str, Any] | None) -> tuple[int, Any]:
        if order is None:
            return 404, {"code": "400100", "msg": "order not exist."}
        return self.ok(self.record(order))

    def create(self, p: dict[str, Any], trigger: bool) -> tuple[int, Any]:
        info = self.symbols[p["symbol"]]
        qty, side = dec(p["size"]), p["side"]
        price = dec(self.state["prices"][p["symbol"]])
        if qty < dec(info["baseMinSize"]) or qty % dec(info["baseIncrement"]) != 0:
            return self.error("400100", "Order size increment invalid.")
        stop = dec(p["stopPrice"]) if trigger else None
        if stop is not None and stop % dec(info["priceIncrement"]) != 0:
            return self.error("400100", "Price increment invalid.")
        if any(o["client_id"] == p["clientOid"] for o in self.state["orders"].values()):
            return self.error("400100", "clientOid duplicated")
        kind = None
        if trigger:
            kind = "stop_loss" if p.get("stop") == "loss" else "take_profit"
        order = {
            "id": f"kc{self.new_id()}",
            "client_id": p["clientOid"],
            "symbol": p["symbol"],
            "side": side,
            "type": p["type"],
            "qty": str(qty),
            "executed": "0",
            "quote_qty": "0",
            "status": "open",
            "trigger": str(stop) if stop else None,
            "kind": kind,
            "locks": False,
            "base": info["baseCurrency"],
            "quote": info["quoteCurrency"],
            "price": "0",
            "time": 1733011200000 + int(self.state["next_id"]),
        }
        if not trigger:
            need = qty * price * (1 + TAKER_FEE) if side == "buy" else qty
            if need > self.free(order["quote"] if side == "buy" else order["base"]):
                return self.error("200004", "Balance insufficient!")
            self.fill(order, price)
        self.state["orders"][order["id"]] = order
        return self.ok({"orderId": order["id"]})

    def cancel(self, order: dict[str, Any] | None) -> tuple[int, Any]:
        if order is None or order["status"] != "open":
            return 404, {"code": "400100", "msg": "order not exist."}
        order["status"] = "cancelled"
        return self.ok({"cancelledOrderIds": [order["id"]]})

    def record(self, o: dict[str, Any]) -> dict[str, Any]:
        """An order (GET /api/v1/orders/{id}) or stop order (GET /api/v1/stop-order/{id})."""
        filled = o["status"] == "filled"
        out = {
            "id": o["id"],
            "symbol": o["symbol"],
            "opType": "DEAL",
            "type": o["type"],
            "side": o["side"],
            "price": "0",
            "size": o["qty"],
            "funds": "0",
            "dealFunds": o["quote_qty"],
            "dealSize": o["executed"],
            "fee": o.get("fee", "0"),
            "feeCurrency": o["quote"],
            "stp": "",
            "timeInForce": "GTC",
            "postOnly": False,
            "hidden": False,
            "iceberg": False,
            "visibleSize": "0",
            "cancelAfter": 0,
            "channel": "API",
            "clientOid": o["client_id"],
            "remark": None,
            "tags": None,
            "createdAt": o["time"],
            "tradeType": "TRADE",
        }
        if o["kind"] is None:
            out.update(
                stop="",
                stopTriggered=False,
                stopPrice="0",
                isActive=o["status"] == "open",
                cancelExist=o["status"] == "cancelled",
            )
            return out
        out.update(
            stop="loss" if o["kind"] == "stop_loss" else "entry",
            stopPrice=o["trigger"],
            status="NEW" if o["status"] == "open" else "TRIGGERED",
            stopTriggered=filled,
            userId="6548e0c9",
            domainId="kucoin",
            orderTime=o["time"] * 1_000_000,
            takerFeeRate="0.001",
            makerFeeRate="0.001",
        )
        if not filled:
            out.pop("dealSize")
            out.pop("dealFunds")
        return out
