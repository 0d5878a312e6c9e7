"""Strategies inside the env, against hand-computed numbers: staking accrual with unbonding,
lending interest at the kinked rate, Uniswap V3 fees and value, an arbitrage round trip on two
crafted venues; plus layout, risk caps, determinism and state."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.config import MarketConfig, from_dict, to_dict
from nexlify.errors import ConfigError, DataError
from nexlify.market.env import VecMarketEnv, action_names
from nexlify.market.obs_layout import spot_action, spot_action_count, spot_order
from nexlify.market.strategies import columns as SC
from nexlify.market.strategies import kernel as SK
from tests.helpers import FLAT, assert_threaded_matches_serial, bars_market, market_config

HOURS_PER_YEAR = 8760.0


def with_strategies(base: MarketConfig, **strategies: Any) -> MarketConfig:
    values = to_dict(base)
    values["strategies"].update(strategies)
    return from_dict(MarketConfig, values)


def run(env: VecMarketEnv, actions: list[int]) -> None:
    for a in actions:
        env.step(np.array([a], dtype=np.int64))


def evaluation_env(data: Any, config: MarketConfig) -> VecMarketEnv:
    env = VecMarketEnv(data, config, num_envs=1, autoreset=False, record=True)
    env.reset(options={"starts": [0]})
    return env


def test_spot_only_default_keeps_the_spot_layout() -> None:
    data = bars_market([[FLAT, FLAT]] * 10)
    env = VecMarketEnv(data, market_config(), num_envs=1)
    assert env.strategies is None
    assert env.n_actions == 1 + 2 * 2
    assert env.obs_size == 2 * 2 + 2 * 3 + 4
    assert env.strategy_breakdown(0) == {}
    assert action_names(data.pairs) == [
        "hold",
        "buy C0/USDT",
        "sell C0/USDT",
        "buy C1/USDT",
        "sell C1/USDT",
    ]


def staking_config(**overrides: Any) -> MarketConfig:
    staking = {
        "asset": "C0",
        "apy": 0.10,
        "epoch_hours": 24.0,
        "unbonding_hours": 48.0,
        "stake_size": 0.1,
        **overrides,
    }
    return with_strategies(market_config(fee=0.0), enabled=["spot", "staking"], staking=staking)


def test_staking_accrues_per_epoch_and_unbonds_before_funds_return() -> None:
    env = evaluation_env(bars_market([FLAT] * 120), staking_config())
    stake, unstake = 3, 4  # after hold, buy C0, sell C0
    assert action_names(env.data.pairs, env.config.strategies)[stake:] == ["stake C0", "unstake C0"]
    g = 1.1 ** (24 / HOURS_PER_YEAR) - 1  # growth per 24 h epoch
    run(env, [stake])  # 10% of 10,000 at 100: 10 C0, first bar accrued linearly
    assert env.account(0)["cash"] == pytest.approx(9000.0)
    assert env.account(0)["equity"] == pytest.approx(9000.0 + (10 + 10 * g / 24) * 100.0)
    run(env, [0] * 23)  # 24 bars: the epoch compounds into the principal
    assert env._ss[0, SK.ST_QTY] == pytest.approx(10 * (1 + g))
    assert env._ss[0, SK.ST_ACCRUED] == pytest.approx(0.0, abs=1e-12)
    run(env, [0] * 24)  # second epoch
    grown = 10 * (1 + g) ** 2
    assert env.account(0)["equity"] == pytest.approx(9000.0 + grown * 100.0)
    run(env, [unstake])  # bar 49: unbonding until bar 49 + 48 = 97, no rewards meanwhile
    assert env._ss[0, SK.ST_UNBOND_AT] == 97
    run(env, [0] * 47)  # through bar 96: still unbonding, cash untouched
    assert env.account(0)["cash"] == pytest.approx(9000.0)
    assert env.account(0)["equity"] == pytest.approx(9000.0 + grown * 100.0)
    run(env, [0])  # bar 97: sold at the open
    assert env.account(0)["cash"] == pytest.approx(9000.0 + grown * 100.0)
    assert env.strategy_breakdown(0)["pnl_staking"] == pytest.approx((grown - 10) * 100.0)


def test_staking_slashing_takes_its_fraction() -> None:
    config = staking_config(
        slashing_events_per_year=HOURS_PER_YEAR, slashing_fraction=0.5, apy=0.0
    )  # fmt: skip  (one event per bar: probability 1)
    env = evaluation_env(bars_market([FLAT] * 10), config)
    run(env, [3])
    assert env._ss[0, SK.ST_QTY] == pytest.approx(5.0)  # 10 C0 staked, half slashed in its bar
    assert env.strategy_breakdown(0)["staking_slashing_events"] == 1.0


def test_lending_accrues_the_kinked_supply_rate_per_bar() -> None:
    lending = {
        "base_rate": 0.0,
        "slope1": 0.04,
        "slope2": 0.60,
        "optimal_utilization": 0.8,
        "reserve_factor": 0.1,
        "utilization": 0.9,
        "supply_size": 0.25,
    }
    config = with_strategies(market_config(), enabled=["spot", "lending"], lending=lending)
    env = evaluation_env(bars_market([FLAT] * 30), config)
    supply, withdraw = 3, 4
    run(env, [supply] + [0] * 9)  # 2,500 USDT for 10 bars at 27.54% a year
    rate = 0.34 * 0.9 * 0.9 / HOURS_PER_YEAR
    assert env._ss[0, SK.LD_BAL] == pytest.approx(2500.0 * (1 + rate) ** 10)
    run(env, [withdraw])  # the withdrawal is at the open, before the bar's interest
    assert env.account(0)["cash"] == pytest.approx(10_000.0 + 2500.0 * ((1 + rate) ** 10 - 1))
    assert env.strategy_breakdown(0)["pnl_lending"] == pytest.approx(2500 * ((1 + rate) ** 10 - 1))


@pytest.mark.parametrize(
    ("asset", "pair_index"), [("quote", -1), ("USDT", -1), ("usdt", -1), ("C1", 1), ("c0", 0)]
)
def test_lending_asset_resolves_to_the_quote_or_a_pair(asset: str, pair_index: int) -> None:
    """The quote currency (by name or as "quote", any case) lends without a price; a pair's
    base lends at that pair's price."""
    config = with_strategies(market_config(), enabled=["spot", "lending"], lending={"asset": asset})
    env = VecMarketEnv(bars_market([[FLAT, FLAT]] * 10), config, num_envs=1)
    assert env.strategies is not None
    assert env.strategies.sp[SC.SP_LD_PAIR] == pair_index


def test_lending_an_asset_outside_the_market_is_refused_by_name() -> None:
    config = with_strategies(
        market_config(), enabled=["spot", "lending"], lending={"asset": "DOGE"}
    )
    with pytest.raises(ConfigError, match=r"strategies\.lending.*DOGE.*C0, C1, USDT"):
        VecMarketEnv(bars_market([[FLAT, FLAT]] * 10), config, num_envs=1)


def test_lending_utilization_from_csv(tmp_path: Path) -> None:
    data = bars_market([FLAT] * 12)
    times = pd.to_datetime(data.time[[0, 6]], unit="s", utc=True)
    csv = tmp_path / "util.csv"
    pd.DataFrame(
        {"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "utilization": [0.4, 0.8]}
    ).to_csv(csv, index=False)
    lending = {
        "slope1": 0.04,
        "optimal_utilization": 0.8,
        "reserve_factor": 0.1,
        "utilization_source": "csv",
        "utilization_csv": str(csv),
    }
    env = evaluation_env(
        data, with_strategies(market_config(), enabled=["lending"], lending=lending)
    )
    assert env._ser[5, SK.SER_UTIL] == 0.4 and env._ser[6, SK.SER_UTIL] == 0.8
    assert env._ser[6, SK.SER_SUPPLY_RATE] == pytest.approx(0.04 * 0.8 * 0.9)
    pd.DataFrame({"timestamp": ["2024-01-01"], "utilization": [85.0]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"utilization 85.0 .* outside \[0, 1\]"):
        evaluation_env(data, with_strategies(market_config(), enabled=["lending"], lending=lending))


def lp_config(**overrides: Any) -> MarketConfig:
    liquidity = {
        "range_width": 0.1,
        "fee_tier": 0.003,
        "volume_ratio": 1000.0,
        "depth_2pct_usd": 1e6,
        "gas_cost": 0.0,
        "lp_size": 0.25,
        **overrides,
    }
    return with_strategies(
        market_config(fee=0.0), enabled=["spot", "liquidity"], liquidity=liquidity
    )


def test_liquidity_position_earns_its_share_of_fees_and_tracks_value() -> None:
    bars = [FLAT] * 3 + [(100.0, 106.0, 99.0, 105.0)] + [(105.0, 105.5, 104.5, 105.0)] * 3
    env = evaluation_env(bars_market(bars), lp_config())
    provide, rebalance, remove = 3, 4, 5
    run(env, [provide])  # 2,500 at 100 on [100/1.1, 110] widened to the 0.3% tier's 60-tick grid:
    pa, pb = 1.0001**45060, 1.0001**47040  # ticks 45100.85 floored, 47007.15 ceiled (90.54, 110.36)
    L = 2500.0 / (2 * 10 - 100 / math.sqrt(pb) - math.sqrt(pa))
    pool_l = 1e6 / (10 * (math.sqrt(1.02) - 1))
    fee_per_bar = 1.0 * 100.0 * 1000.0 * 0.003 * L / (L + pool_l)  # volume x close x ratio
    assert env._ss[0, SK.LP_L] == pytest.approx(L)
    assert env._ss[0, SK.LP_FEES] == pytest.approx(fee_per_bar)
    assert env.account(0)["equity"] == pytest.approx(10_000.0 + fee_per_bar)
    run(env, [0, 0])  # bar 3 rises to 105 (range 99..106 all inside [90.9, 110])
    x, y = L * (1 / math.sqrt(105) - 1 / math.sqrt(pb)), L * (math.sqrt(105) - math.sqrt(pa))
    pool_l3 = 1e6 / (math.sqrt(105) * (math.sqrt(1.02) - 1))
    fees = 2 * fee_per_bar + 1.0 * 105.0 * 1000.0 * 0.003 * L / (L + pool_l3)
    assert env.account(0)["equity"] == pytest.approx(7500.0 + x * 105 + y + fees)
    x0, y0 = L * (1 / 10 - 1 / math.sqrt(pb)), L * (10 - math.sqrt(pa))
    assert env._ss[0, SK.LP_IL] == pytest.approx(x * 105 + y - (x0 * 105 + y0))
    assert env._ss[0, SK.LP_IL] < 0
    run(env, [provide])  # already open: refused
    assert env.risk_counters(0)["blocked_entries"] == 1
    run(env, [rebalance, remove])
    assert env._ss[0, SK.LP_REBALANCES] == 1 and env._ss[0, SK.LP_L] == 0.0
    out = env.strategy_breakdown(0)
    assert out["pnl_liquidity"] + out["pnl_spot"] == pytest.approx(env.account(0)["equity"] - 1e4)
    assert out["pnl_spot"] == pytest.approx(0.0, abs=1e-9)


def test_liquidity_out_of_range_earns_nothing_and_pays_gas() -> None:
    bars = [FLAT] * 2 + [(120.0, 121.0, 119.0, 120.0)] * 3
    env = evaluation_env(bars_market(bars), lp_config(gas_cost=5.0))
    run(env, [3])
    fees_in_range = env._ss[0, SK.LP_FEES]
    run(env, [0])  # gapped to 120 > 110: all quote, no fees
    assert env._ss[0, SK.LP_FEES] == fees_in_range
    assert env.strategy_breakdown(0)["lp_gas"] == 5.0
    assert env.positions(0) == {}


def write_candles(folder: Path, data: Any, opens: float, closes: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    times = pd.to_datetime(data.time, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    hi, lo = max(opens, closes) + 0.5, min(opens, closes) - 0.5
    frame = pd.DataFrame(
        {"date": times, "open": opens, "high": hi, "low": lo, "close": closes, "volume": 1.0}
    )
    frame.to_csv(folder / "C0_USDT-1h.csv", index=False)


def arbitrage_config(tmp_path: Path, **overrides: Any) -> MarketConfig:
    arbitrage = {
        "venues": [f"b={tmp_path / 'b'}"],
        "primary_dir": str(tmp_path / "a"),
        "max_trade_fraction": 1.0,
        "book_size": 0.2,
        **overrides,
    }
    return with_strategies(
        market_config(fee=0.001), enabled=["spot", "arbitrage"], arbitrage=arbitrage
    )


def test_arbitrage_round_trip_on_two_crafted_venues(tmp_path: Path) -> None:
    data = bars_market([FLAT] * 8)
    write_candles(tmp_path / "a", data, 100.0, 100.0)
    write_candles(tmp_path / "b", data, 101.0, 101.0)  # venue b trades 1% higher
    env = evaluation_env(data, arbitrage_config(tmp_path))
    assert env.n_actions == 3  # rule mode adds no actions
    run(env, [0])
    # Book 2,000: 500 quote + 500 (after the 0.1% fee) of base on each venue.
    base_b = 500 / 1.001 / 101
    # Buy on a at 100 x 1.001 = 100.1, sell on b at 101 x 0.999 = 100.899, all of b's base.
    profit = base_b * (101 * 0.999 - 100 * 1.001)
    out = env.strategy_breakdown(0)
    assert out["arb_trades"] == 1
    assert out["arb_profit"] == pytest.approx(profit)  # 3.9515
    assert profit == pytest.approx(3.9515, abs=1e-4)
    # b ran out of base, a of quote: both are sent over (5 USD of base at 100 + 1 USDT).
    assert out["arb_transfers"] == 2
    assert out["arb_withdrawal_fees"] == pytest.approx(6.0)
    assert env._eta[0, 0] == 2
    run(env, [0])  # arrives at bar 2's open; b is dear again and trades again
    assert env._eta[0, 0] in (-1.0, 3.0)
    assert env._inv[0, 0, 1, SK.INV_BASE_TRANSIT] == 0.0 or env._eta[0, 0] == 3.0
    assert env.strategy_breakdown(0)["arb_trades"] == 2
    total = env.account(0)["equity"] - 10_000.0
    out = env.strategy_breakdown(0)
    assert out["pnl_arbitrage"] + out["pnl_spot"] == pytest.approx(total)
    assert out["pnl_spot"] == pytest.approx(0.0, abs=1e-9)
    assert out["arb_spreads_simulated"] == 0.0


def test_arbitrage_skips_spreads_below_costs(tmp_path: Path) -> None:
    data = bars_market([FLAT] * 5)
    write_candles(tmp_path / "a", data, 100.0, 100.0)
    write_candles(tmp_path / "b", data, 100.15, 100.15)  # 0.15% < 0.2% of fees
    env = evaluation_env(data, arbitrage_config(tmp_path))
    run(env, [0, 0, 0])
    assert env.strategy_breakdown(0)["arb_trades"] == 0


def test_arbitrage_as_agent_actions(tmp_path: Path) -> None:
    data = bars_market([FLAT] * 8)
    write_candles(tmp_path / "a", data, 100.0, 100.0)
    write_candles(tmp_path / "b", data, 101.0, 101.0)
    env = evaluation_env(data, arbitrage_config(tmp_path, mode="agent"))
    names = action_names(data.pairs, env.config.strategies)
    assert names[3:] == ["fund arbitrage book", "close arbitrage book", "arbitrage C0/USDT"]
    run(env, [0, 5])  # trading an unfunded book does nothing
    assert env.strategy_breakdown(0)["arb_trades"] == 0
    run(env, [3, 0, 5])  # fund, wait, trade
    assert env.strategy_breakdown(0)["arb_trades"] == 1
    run(env, [4])  # close: everything back to cash
    assert env._ss[0, SK.AR_FUNDED] == 0 and env.account(0)["cash"] == env.account(0)["equity"]


def test_arbitrage_venue_errors_name_the_setting(tmp_path: Path) -> None:
    data = bars_market([FLAT] * 5)
    write_candles(tmp_path / "b", data, 101.0, 101.0)
    config = with_strategies(
        market_config(), enabled=["arbitrage"], arbitrage={"venues": [f"b={tmp_path / 'b'}"]}
    )
    with pytest.raises(ConfigError, match=r"strategies\.arbitrage\.primary_dir"):
        VecMarketEnv(data, config)
    later = replace(data, time=data.time + 86_400 * 365)
    write_candles(tmp_path / "a", later, 100.0, 100.0)
    write_candles(tmp_path / "b", later, 101.0, 101.0)
    env = VecMarketEnv(data, arbitrage_config(tmp_path))  # disjoint spans: said, no arbitrage
    assert env.strategies is not None
    assert any("no bar of C0/USDT in common" in note for note in env.strategies.notes)
    assert np.isnan(env._prem[:, 0, 1]).all()
    with pytest.raises(ConfigError, match=r"strategies\.arbitrage\.venues"):
        with_strategies(market_config(), arbitrage={"venues": ["kucoin"]})


def test_strategy_config_errors_name_field_and_value() -> None:
    data = bars_market([FLAT] * 5)
    with pytest.raises(ConfigError, match=r"strategies.staking.asset: 'auto' .*ETH, SOL"):
        VecMarketEnv(data, with_strategies(market_config(), enabled=["staking"]))
    with pytest.raises(ConfigError, match=r"strategies.enabled: 'yield' is invalid"):
        with_strategies(market_config(), enabled=["spot", "yield"])
    with pytest.raises(ConfigError, match=r"strategies.lending.optimal_utilization: 1.5"):
        with_strategies(market_config(), lending={"optimal_utilization": 1.5})
    with pytest.raises(ConfigError, match=r"strategies.liquidity.pair: 'ETH/USDT' is not one"):
        VecMarketEnv(
            data,
            with_strategies(market_config(), enabled=["liquidity"], liquidity={"pair": "ETH/USDT"}),
        )


def test_caps_and_daily_lock_block_new_allocations() -> None:
    config = staking_config(stake_size=0.3, max_allocation=0.5)
    env = evaluation_env(bars_market([FLAT] * 10), config)
    run(env, [3, 3, 3])  # 30%, then the 20% left under the 50% cap, then refused
    value = env._ss[0, SK.VALUE + SK.S_STAKING]
    assert value == pytest.approx(5000.0, rel=1e-3)
    assert env.risk_counters(0)["blocked_entries"] == 1
    env._acct[0, 3] = 1.0  # daily-loss lock on
    run(env, [4, 0])
    assert env.risk_counters(0)["blocked_entries"] == 1  # unstaking is always allowed


def test_strategies_without_spot_drop_the_spot_actions() -> None:
    config = with_strategies(market_config(), enabled=["lending"])
    env = evaluation_env(bars_market([FLAT] * 5), config)
    names = action_names(env.data.pairs, env.config.strategies)
    assert names == ["hold", "supply USDT", "withdraw USDT"]
    run(env, [1, 2])
    assert env.positions(0) == {} and env.account(0)["cash"] > 10_000.0


@pytest.mark.parametrize("enabled", [["spot"], ["spot", "staking"], ["lending"]])
def test_spot_order_decodes_the_env_action_layout(enabled: list[str]) -> None:
    """``spot_order`` (what paper sessions use to hold buys back after a feed gap) names the
    same pair and side as the env's action names; strategy actions are no spot order."""
    data = bars_market([[FLAT, FLAT]] * 10)
    staking = {"asset": "C0", "apy": 0.1, "epoch_hours": 24.0, "unbonding_hours": 48.0}
    config = with_strategies(market_config(), enabled=enabled, staking=staking)
    env = VecMarketEnv(data, config, num_envs=1)
    names = action_names(data.pairs, env.config.strategies)
    n_spot = spot_action_count(config, data.n_pairs)
    assert len(names) == env.n_actions and n_spot == (4 if "spot" in enabled else 0)
    for action, name in enumerate(names):
        order = spot_order(action, n_spot)
        side, _, pair = name.partition(" ")
        if order is None:
            assert action == 0 or action > n_spot
        else:
            assert (side, pair) == ("buy" if order[1] else "sell", data.pairs[order[0]])
            assert spot_action(order[0], buy=order[1]) == action  # the baselines' encoder


ALL = ["spot", "staking", "lending", "liquidity", "arbitrage"]


def all_strategies_run(seed: int, steps: int = 300) -> tuple[np.ndarray, dict[str, float]]:
    from nexlify.data.sources import synthetic_market

    data = synthetic_market(("ETH/USDT", "SOL/USDT"), "1h", seed=1, days=60)
    config = with_strategies(
        MarketConfig(),
        enabled=ALL,
        staking={"slashing_events_per_year": 50.0},
        lending={"utilization_source": "simulated"},
    )
    env = VecMarketEnv(data, config, num_envs=3, seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    total = np.zeros(3)
    for _ in range(steps):
        _, r, *_ = env.step(rng.integers(0, env.n_actions, 3))
        total += r
    return total, env.strategy_breakdown(0)


def test_all_strategies_are_deterministic_and_finite() -> None:
    a, info_a = all_strategies_run(5)
    b, info_b = all_strategies_run(5)
    assert np.array_equal(a, b) and info_a == info_b
    assert np.isfinite(a).all()
    assert set(info_a) >= {
        "pnl_spot",
        "pnl_staking",
        "pnl_lending",
        "pnl_liquidity",
        "pnl_arbitrage",
        "arb_spreads_simulated",
    }


@pytest.mark.slow
def test_the_threaded_strategy_kernel_matches_the_serial_one() -> None:
    """Large batches run ``step_all`` (envs over numba's threads, rows prefetched ahead);
    small ones ``step_all_serial``: the same books, rewards and observations either way.
    (Compiling the threaded kernel takes most of a minute on a clean cache.)"""
    from nexlify.data.sources import synthetic_market

    data = synthetic_market(("ETH/USDT", "SOL/USDT"), "1h", seed=1, days=60)
    config = with_strategies(
        replace(MarketConfig(), env=replace(MarketConfig().env, episode_length=100)),
        enabled=ALL,
        staking={"slashing_events_per_year": 50.0},
        lending={"utilization_source": "simulated"},
    )
    a, b = assert_threaded_matches_serial(lambda: VecMarketEnv(data, config, 64, seed=9))
    np.testing.assert_array_equal(a._ss, b._ss)
    assert a.strategy_breakdown(5) == b.strategy_breakdown(5)


def test_state_dict_round_trip_with_strategies() -> None:
    data = bars_market([FLAT] * 40)
    env = evaluation_env(data, staking_config())
    run(env, [3, 0, 0])
    state = env.state_dict()
    run(env, [4, 0])
    after = env.account(0)["equity"]
    env.load_state_dict(state)
    run(env, [4, 0])
    assert env.account(0)["equity"] == pytest.approx(after)
    spot = evaluation_env(data, market_config(fee=0.0))
    with pytest.raises(ConfigError, match="missing ss"):
        env.load_state_dict(spot.state_dict())


def arbitrage_book_value(env: VecMarketEnv, n: int) -> float:
    """Env ``n``'s arbitrage book at its current close, summed from the whole inventory (in
    transit included) in the order the kernel used before it kept ``held``."""
    t, value = env.current_bar(n), 0.0
    for p in range(env._inv.shape[1]):
        for v in range(env._inv.shape[2]):
            inv = env._inv[n, p, v]
            price = env._arb_bar[t, p, SK.AB_CLOSE + v]
            value += (inv[SK.INV_BASE] + inv[SK.INV_BASE_TRANSIT]) * price
            value += inv[SK.INV_QUOTE] + inv[SK.INV_QUOTE_TRANSIT]
    return value


@pytest.mark.parametrize("mode", ["rule", "agent"])
def test_held_arbitrage_inventory_matches_the_inventory_after_random_steps(mode: str) -> None:
    """The holdings the arbitrage mark reads (``held``, kept at events) equal the inventory's
    sums exactly after every step of a random run with many trades and transfers, and so does
    the book's value; ``load_state_dict`` rebuilds them (they are not saved)."""
    from nexlify.data.sources import synthetic_market

    data = synthetic_market(("ETH/USDT", "SOL/USDT"), "1h", seed=2, days=60)
    config = with_strategies(
        replace(MarketConfig(), env=replace(MarketConfig().env, episode_length=150)),
        enabled=ALL,
        lending={"utilization_source": "simulated"},
        arbitrage={"mode": mode, "spread_std": 0.002, "transfer_hours": 3.0,
                   "rebalance_threshold": 0.9},
    )  # fmt: skip
    env = VecMarketEnv(data, config, num_envs=6, seed=3)
    rng = np.random.default_rng(4)
    env.reset()
    for _ in range(400):
        env.step(rng.integers(0, env.n_actions, 6))
        inv = env._inv
        np.testing.assert_array_equal(
            env._held[..., SK.HELD_BASE], inv[..., SK.INV_BASE] + inv[..., SK.INV_BASE_TRANSIT]
        )
        np.testing.assert_array_equal(
            env._held[..., SK.HELD_QUOTE], inv[..., SK.INV_QUOTE] + inv[..., SK.INV_QUOTE_TRANSIT]
        )
        for n in range(6):
            if env._ss[n, SK.AR_FUNDED] != 0.0:
                assert env._ss[n, SK.VALUE + SK.S_ARBITRAGE] == arbitrage_book_value(env, n)
    assert env._ss[:, SK.AR_TRADES].sum() > 0
    if mode == "rule":
        assert (env._eta >= 0).any() or env._ss[:, SK.AR_TRANSFERS].sum() > 0
    state = env.state_dict()
    assert "held" not in state
    expected = env._held.copy()
    env._held[...] = 0.0
    env.load_state_dict(state)
    np.testing.assert_array_equal(env._held, expected)


def test_staking_with_epochs_shorter_than_a_bar_compounds_every_epoch() -> None:
    # ETH-like: 6.4-minute epochs, 3.2% a year: one 1h bar grows the stake by 1.032^(1/8760).
    config = staking_config(apy=0.032, epoch_hours=32 * 12 / 3600)
    env = evaluation_env(bars_market([FLAT] * 5), config)
    run(env, [3, 0])
    assert env._ss[0, SK.ST_QTY] == pytest.approx(10 * 1.032 ** (2 / HOURS_PER_YEAR), rel=1e-12)
