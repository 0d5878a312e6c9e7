"""A live sandbox session against the recorded binance exchange, as its own process.

``python tests/live_session_child.py BOOK_STATE.json -- <nexlify paper options>``: the exchange's
state lives in the JSON file, so a process killed with SIGKILL and started again meets the same
exchange. Each replayed bar moves the recorded market (stops fire inside the bar, market orders
fill at its close). Keys come from the environment, as for ``nexlify paper --live``.
(Used by tests/test_paper_restart.py; not a test module.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

import nexlify.commands.paper as paper_command
from nexlify.cli import build_parser
from nexlify.live.feeds import Bar, ReplayFeed
from nexlify.live.secrets import KEY_ENV, SECRET_ENV
from tests.recorded_exchanges import BinanceBook, binance_exchange


def main(argv: list[str]) -> int:
    state = Path(argv[0])
    book = BinanceBook(
        os.environ[KEY_ENV], os.environ[SECRET_ENV], state_path=state, balances={"USDT": "10000"}
    )

    class MarketMovingFeed(ReplayFeed):
        def next_bars(self, after: int | None) -> list[Bar] | None:
            bars = super().next_bars(after)
            for bar in bars or []:
                for pair, (_, high, low, close, _) in bar.candles.items():
                    book.trade_through(pair.replace("/", ""), low, high)
                    book.set_price(pair.replace("/", ""), close)
            return bars

    paper_command.ReplayFeed = MarketMovingFeed  # type: ignore[misc]

    def factory(exchange_id: str, config: dict[str, Any]) -> Any:
        return binance_exchange(book, sandbox=False)[0]

    args = build_parser().parse_args(["paper", *argv[2:]])
    return paper_command.start_paper(args, Console(stderr=True), exchange_factory=factory)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
