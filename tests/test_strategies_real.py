"""Arbitrage on real candles: Binance vs KuCoin 1h, 2023-11 .. 2024-12 (skipped without
../shared/data). The figures are pinned: the shared data does not change."""

from __future__ import annotations

import numpy as np
import pytest

from nexlify.config import MarketConfig, from_dict, to_dict
from nexlify.data.sources import market_from_files
from nexlify.market.env import VecMarketEnv
from nexlify.market.strategies.arbitrage import load_alignment, scan_alignment
from tests.helpers import shared_data_or_skip


def folders() -> dict[str, str]:
    return {
        "binance": str(shared_data_or_skip("market", "binance")),
        "kucoin": str(shared_data_or_skip("market", "kucoin")),
    }


@pytest.mark.parametrize("pair", ["BTC/USDT", "ETH/USDT", "SOL/USDT"])
def test_real_spreads_rarely_beat_taker_fees(pair: str) -> None:
    alignment = load_alignment(folders(), pair, "1h")
    fees = {"binance": 0.001, "kucoin": 0.001}
    scan = scan_alignment(alignment, pair, fees, slippage_bps=5.0, notional=10_000.0)
    assert scan.bars == 10_042
    # Median open-to-open spread is about 0.5-1 bp: far below 0.1% + 0.1% + 2 x 5 bp.
    assert scan.median_abs_spread_bps < 1.5
    assert scan.opportunities == 1
    assert 0 < scan.earned < 50
    cheap = scan_alignment(alignment, pair, {"binance": 0.0002, "kucoin": 0.0002},
                           slippage_bps=0.0, notional=10_000.0)  # fmt: skip
    assert cheap.opportunities > scan.opportunities


def test_env_arbitrage_on_real_venues() -> None:
    f = folders()
    data = market_from_files(f["binance"], ["ETH/USDT"], "1h")
    data = data.slice(data.index_at("2024-01-01"), data.n_bars)
    values = to_dict(MarketConfig())
    values["strategies"].update(enabled=["spot", "arbitrage"],
                                arbitrage={"venues": [f"kucoin={f['kucoin']}"]})  # fmt: skip
    values["env"]["episode_length"] = 0
    values["env"]["random_start"] = False
    env = VecMarketEnv(data, from_dict(MarketConfig, values), num_envs=1, autoreset=False)
    assert env.strategies is not None and not env.strategies.spreads_simulated
    env.reset(options={"starts": [0]})
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(np.zeros(1, dtype=np.int64))
        done = bool(term[0] or trunc[0])
    out = env.strategy_breakdown(0)
    assert out["arb_trades"] <= 2  # 2024 had one or two hourly spreads above the costs
    assert out["pnl_arbitrage"] + out["pnl_spot"] == pytest.approx(
        env.account(0)["equity"] - 10_000.0
    )
