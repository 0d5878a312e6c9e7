"""Market rules against numbers worked out by hand (fills, fees, stops, sizing, limits)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from nexlify.market import kernels as K
from nexlify.market.env import VecMarketEnv
from tests.helpers import FLAT, bars_market, market_config

HOLD, BUY, SELL = 0, 1, 2


def run(env: VecMarketEnv, actions: list[int]) -> list[float]:
    rewards = []
    for a in actions:
        _, r, _, _, _ = env.step(np.array([a]))
        rewards.append(float(r[0]))
    return rewards


def make_env(bars, **cfg) -> VecMarketEnv:  # type: ignore[no-untyped-def]
    env = VecMarketEnv(bars_market(bars), market_config(**cfg), record=True, autoreset=False)
    env.reset()
    return env


def env_with(bars, **env_fields) -> VecMarketEnv:  # type: ignore[no-untyped-def]
    """``make_env`` with fields of ``EnvConfig`` changed (turnover penalty, minimum hold)."""
    config = market_config()
    config = replace(config, env=replace(config.env, **env_fields))
    env = VecMarketEnv(bars_market(bars), config, record=True, autoreset=False)
    env.reset()
    return env


def test_fill_at_next_open_with_fee_slippage_and_reward() -> None:
    bars = [FLAT, (100.0, 102.0, 99.5, 101.0), (101.0, 101.5, 100.5, 101.0), FLAT]
    env = make_env(bars, slippage_bps=10.0)
    r1 = run(env, [BUY])[0]
    # buy fills at bar 1's open 100 + 10 bps = 100.1; notional 5% of 10,000 = 500; fee 0.5
    qty = 500.0 / 100.1
    cash = 10_000.0 - 500.0 - 0.5
    equity1 = cash + qty * 101.0  # marked at bar 1's close
    assert env.account(0)["cash"] == pytest.approx(cash)
    assert env.account(0)["equity"] == pytest.approx(equity1)
    assert r1 == pytest.approx(math.log(equity1 / 10_000.0), rel=1e-6)
    run(env, [SELL])
    # sell fills at bar 2's open 101 - 10 bps = 100.899; fee 0.1% of the proceeds
    proceeds = qty * 100.899
    cash2 = cash + proceeds - proceeds * 0.001
    assert env.account(0)["cash"] == pytest.approx(cash2)
    (trade,) = env.trades(0)
    assert trade["reason"] == "signal"
    assert trade["entry_price"] == pytest.approx(100.1)
    assert trade["exit_price"] == pytest.approx(100.899)
    assert trade["pnl"] == pytest.approx(proceeds * 0.999 - 500.5)
    assert trade["fees"] == pytest.approx(0.5 + proceeds * 0.001)
    assert env.episode_metrics(0).fees_paid == pytest.approx(0.5 + proceeds * 0.001)


def test_decision_uses_next_open_not_the_current_close() -> None:
    # The close of bar 0 is 100 but bar 1 opens at 110: the buy must fill at 110.
    bars = [FLAT, (110.0, 111.0, 109.0, 110.0), (110.0, 111.0, 109.0, 110.0), FLAT]
    env = make_env(bars)
    run(env, [BUY, SELL])
    assert env.trades(0)[0]["entry_price"] == pytest.approx(110.0)


def test_stop_loss_inside_the_bar() -> None:
    bars = [FLAT, FLAT, (99.0, 99.5, 97.0, 98.5), FLAT]
    env = make_env(bars)
    run(env, [BUY, HOLD])
    (trade,) = env.trades(0)
    assert trade["reason"] == "stop"
    assert trade["exit_price"] == pytest.approx(98.0)  # entry 100 x (1 - 2%)
    assert trade["exit_bar"] == 2
    qty = 5.0  # 500 / 100
    assert trade["pnl"] == pytest.approx(qty * 98.0 * 0.999 - 500.5)


def test_gap_through_stop_fills_at_the_open() -> None:
    bars = [FLAT, FLAT, (95.0, 96.0, 94.0, 95.5), FLAT]
    env = make_env(bars)
    run(env, [BUY, HOLD])
    assert env.trades(0)[0]["exit_price"] == pytest.approx(95.0)


def test_same_bar_stop_and_take_profit_assumes_the_stop() -> None:
    bars = [FLAT, FLAT, (100.0, 106.0, 97.0, 104.0), FLAT]
    env = make_env(bars)
    run(env, [BUY, HOLD])
    (trade,) = env.trades(0)
    assert trade["reason"] == "stop"
    assert trade["exit_price"] == pytest.approx(98.0)


@pytest.mark.parametrize(("bar", "price"), [((101.0, 105.5, 100.5, 105.0), 105.0),
                                            ((107.0, 108.0, 106.0, 107.5), 107.0)])  # fmt: skip
def test_take_profit_and_favourable_gap(bar: tuple[float, ...], price: float) -> None:
    env = make_env([FLAT, FLAT, bar, FLAT])
    run(env, [BUY, HOLD])
    (trade,) = env.trades(0)
    assert trade["reason"] == "take"
    assert trade["exit_price"] == pytest.approx(price)


def test_trailing_stop_ratchets_with_previous_highs_only() -> None:
    bars = [
        FLAT,
        (100.0, 100.5, 99.5, 100.2),  # entry at 100; highest high after this bar: 100.5
        (100.5, 104.0, 101.0, 103.5),  # trail 100.5 x 0.97 = 97.485 < stop-loss 98: no exit
        (103.5, 104.5, 100.8, 101.0),  # trail uses 104 (previous high): 100.88 >= low 100.8
        FLAT,
    ]
    env = make_env(bars, take_profit=0.0)
    run(env, [BUY, HOLD])
    assert env.positions(0)["C0/USDT"]["high_water"] == pytest.approx(104.0)
    run(env, [HOLD])
    (trade,) = env.trades(0)
    assert trade["reason"] == "trail"
    assert trade["exit_price"] == pytest.approx(104.0 * 0.97)
    assert trade["exit_bar"] == 3


def test_no_stops_when_disabled() -> None:
    bars = [FLAT, FLAT, (90.0, 120.0, 80.0, 100.0), FLAT]
    env = make_env(bars, stop_loss=0.0, take_profit=0.0, trailing_stop=0.0)
    run(env, [BUY, HOLD])
    assert env.positions(0)  # still open


def test_position_cap_sizes_at_five_percent_of_equity() -> None:
    env = make_env([FLAT, FLAT, FLAT])
    run(env, [BUY])
    position = env.positions(0)["C0/USDT"]
    assert position["quantity"] * position["entry_price"] == pytest.approx(500.0)


def kelly(hist: list[float], n_closed: int, **risk: float) -> float:
    cfg = market_config(use_kelly=True, **risk)  # type: ignore[arg-type]
    from nexlify.market.env import _pack_params

    params = _pack_params(cfg, record=False)
    buf = np.zeros(cfg.risk.kelly_window)
    buf[: len(hist)] = hist
    return float(K._kelly_size(buf, float(n_closed), params))


def test_kelly_size_by_hand() -> None:
    hist = [0.04] * 6 + [-0.02] * 4
    # win rate 0.6, payoff 0.04 / 0.02 = 2 -> full Kelly 0.6 - 0.4 / 2 = 0.4 -> half-Kelly 0.2
    assert kelly(hist, 10, max_position=0.5) == pytest.approx(0.2)
    assert kelly(hist, 10, max_position=0.05) == pytest.approx(0.05)  # capped
    assert kelly(hist, 9, max_position=0.5) == pytest.approx(0.5)  # too few trades: the cap
    # win rate 0.3, payoff 1 -> negative Kelly -> the floor
    losing = [0.01] * 3 + [-0.01] * 7
    assert kelly(losing, 10, max_position=0.5, kelly_min_fraction=0.01) == pytest.approx(0.01)


def test_kelly_in_the_env_uses_the_episode_trade_history() -> None:
    # Alternate winning (+2 on 100) and losing (-1) round trips, then size the 11th entry.
    bars = [FLAT]
    for i in range(10):
        close = 102.0 if i % 2 == 0 else 99.0
        bars += [(100.0, 100.1, 99.9, 100.0), (close, close, close, close)]
    bars += [FLAT, FLAT, FLAT]
    env = make_env(
        bars, use_kelly=True, max_position=0.5, stop_loss=0.0, take_profit=0.0, trailing_stop=0.0
    )
    actions = []
    for _ in range(10):
        actions += [BUY, SELL]
    run(env, actions)
    trades = env.trades(0)
    assert len(trades) == 10
    # The first 10 entries (before 10 closed trades) use the cap: 50% of equity.
    rets = np.array([t["return"] for t in trades])
    wins, losses = rets[rets > 0], -rets[rets <= 0]
    win_rate = len(wins) / 10
    payoff = wins.mean() / losses.mean()
    expected = 0.5 * (win_rate - (1 - win_rate) / payoff)
    equity = env.account(0)["equity"]
    run(env, [BUY])
    position = env.positions(0)["C0/USDT"]
    assert position["quantity"] * position["entry_price"] == pytest.approx(expected * equity)


def test_max_concurrent_trades_across_pairs() -> None:
    market = bars_market([[FLAT] * 4] * 6)  # 6 bars of 4 pairs
    env = VecMarketEnv(market, market_config(), record=True, autoreset=False)
    env.reset()
    for pair in range(4):
        env.step(np.array([1 + 2 * pair]))
    assert len(env.positions(0)) == 3
    assert env.risk_counters(0)["blocked_entries"] == 1


def test_daily_loss_limit_blocks_until_the_next_utc_day() -> None:
    crash = (100.0, 100.0, 93.0, 94.0)
    bars = [FLAT, crash, FLAT, FLAT, FLAT, FLAT]  # bars at 21:00, 22:00, 23:00, 00:00, ...
    env = VecMarketEnv(
        bars_market(bars, start="2024-01-01 21:00"),
        market_config(max_position=1.0, stop_loss=0.0, trailing_stop=0.0, take_profit=0.0),
        record=True,
        autoreset=False,
    )
    env.reset()
    run(env, [BUY])  # all in at 100; closes at 94: equity ~ -6.1% < -5% of the day's open
    assert env.account(0)["locked"]
    run(env, [SELL, BUY])  # sell fills at 23:00's open; the buy fills at 00:00: a new UTC day
    assert env.positions(0)
    assert env.risk_counters(0)["daily_limit_hits"] == 1


def test_daily_loss_limit_refuses_entries_for_the_rest_of_the_day() -> None:
    crash = (100.0, 100.0, 93.0, 94.0)
    bars = [FLAT, crash, FLAT, FLAT, FLAT, FLAT]  # 18:00 ... 23:00, all on one UTC day
    env = VecMarketEnv(
        bars_market(bars, start="2024-01-01 18:00"),
        market_config(max_position=1.0, stop_loss=0.0, trailing_stop=0.0, take_profit=0.0),
        record=True,
        autoreset=False,
    )
    env.reset()
    run(env, [BUY, SELL, BUY])
    assert not env.positions(0)
    assert env.risk_counters(0)["blocked_entries"] == 1


def test_close_on_daily_limit_liquidates_at_the_next_open() -> None:
    crash = (100.0, 100.0, 93.0, 94.0)
    bars = [FLAT, crash, (95.0, 95.0, 95.0, 95.0), FLAT]
    env = make_env(
        bars,
        max_position=1.0,
        stop_loss=0.0,
        trailing_stop=0.0,
        take_profit=0.0,
        close_on_daily_limit=True,
    )
    run(env, [BUY, HOLD])
    (trade,) = env.trades(0)
    assert trade["reason"] == "limit"
    assert trade["exit_price"] == pytest.approx(95.0)


def test_truncated_at_the_end_of_the_window_and_positions_liquidated() -> None:
    env = make_env([FLAT, FLAT, FLAT, (101.0, 101.0, 101.0, 101.0)])
    _, _, term, trunc, _ = env.step(np.array([BUY]))
    assert not term[0] and not trunc[0]
    env.step(np.array([HOLD]))
    _, _, term, trunc, info = env.step(np.array([HOLD]))
    assert trunc[0] and not term[0]
    assert info["_final_obs"][0]
    (trade,) = env.trades(0)
    assert trade["reason"] == "end"
    assert trade["exit_price"] == pytest.approx(101.0)
    with pytest.raises(Exception, match="reset"):
        env.step(np.array([HOLD]))


def test_ruin_terminates_the_episode() -> None:
    bars = [FLAT, FLAT, (40.0, 40.0, 40.0, 40.0), FLAT, FLAT]
    env = make_env(bars, max_position=1.0, stop_loss=0.0, trailing_stop=0.0, take_profit=0.0)
    env.step(np.array([BUY]))
    _, _, term, trunc, _ = env.step(np.array([HOLD]))
    assert term[0] and not trunc[0]


def test_rewards_sum_to_the_log_return_of_the_episode() -> None:
    rng = np.random.default_rng(1)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    bars = [(c, c * 1.004, c * 0.996, c) for c in closes]
    env = make_env(bars)
    total = 0.0
    for _ in range(199):
        _, r, term, trunc, _ = env.step(rng.integers(0, 3, 1))
        total += float(r[0])
        if term[0] or trunc[0]:
            break
    assert total == pytest.approx(math.log(env.account(0)["equity"] / 10_000.0), abs=1e-5)


def test_turnover_penalty_costs_the_reward_only() -> None:
    bars = [FLAT, (100.0, 102.0, 99.5, 101.0), (101.0, 101.5, 100.5, 101.0), FLAT, FLAT]
    plain = make_env(bars)
    base = env_with(bars, turnover_penalty=2.0)
    actions = [BUY, HOLD, SELL]
    r0, r2 = run(plain, actions), run(base, actions)
    # the buy at 100 pays a fee of 0.5 on 500: the reward is charged 2 x 0.5 more on 10,000
    assert r2[0] == pytest.approx(r0[0] - 2.0 * 0.5 / 10_000.0, abs=1e-9)
    assert r2[1] == r0[1]  # no fill, no cost
    sell_fee = plain.episode_metrics(0).fees_paid - 0.5
    equity_before_sell = 10_000.0 * math.exp(r0[0] + r0[1])
    assert r2[2] == pytest.approx(r0[2] - 2.0 * sell_fee / equity_before_sell, abs=1e-9)
    # what is reported is untouched
    assert base.account(0) == plain.account(0)
    assert base.trades(0) == plain.trades(0)
    assert base.episode_metrics(0) == plain.episode_metrics(0)


def test_min_hold_bars_delays_the_agents_sell_only() -> None:
    bars = [FLAT] * 7
    env = env_with(bars, min_hold_bars=3)
    # the buy fills at bar 1's open; sells at bars 2 and 3 come too early, the one at 4 fills
    run(env, [BUY, SELL, SELL])
    assert env.trades(0) == [] and env.position_mask()[0, 0]
    run(env, [SELL])
    (trade,) = env.trades(0)
    assert (trade["entry_bar"], trade["exit_bar"], trade["reason"]) == (1, 4, "signal")
    # 0 bars (the default) sells at once, as before the rule existed
    env0 = env_with(bars, min_hold_bars=0)
    run(env0, [BUY, SELL])
    assert [t["exit_bar"] for t in env0.trades(0)] == [2]


def test_min_hold_bars_never_holds_back_a_stop() -> None:
    bars = [FLAT, FLAT, (99.0, 99.5, 97.0, 98.5), FLAT]
    env = env_with(bars, min_hold_bars=10)
    run(env, [BUY, SELL])
    (trade,) = env.trades(0)
    assert (trade["reason"], trade["exit_bar"]) == ("stop", 2)


def test_min_hold_bars_is_checked() -> None:
    from nexlify.config import EnvConfig
    from nexlify.errors import ConfigError

    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match=r"env\.min_hold_bars"):
            EnvConfig(min_hold_bars=bad)  # type: ignore[arg-type]


def drifting_bars(n: int) -> list[tuple[float, float, float, float]]:
    """Bars rising 1% then falling 0.5%, by turns: every bar changes the equity of a position."""
    bars, price = [], 100.0
    for i in range(n):
        close = price * (1.01 if i % 2 == 0 else 0.995)
        bars.append((price, max(price, close) + 0.1, min(price, close) - 0.1, close))
        price = close
    return bars


def test_decision_interval_holds_between_decisions_and_sums_the_rewards() -> None:
    bars = drifting_bars(11)
    every = env_with(bars)
    per_bar = run(every, [BUY, HOLD, HOLD, SELL, HOLD, HOLD, BUY, HOLD, HOLD])
    env = env_with(bars, decision_interval=3)
    rewards = run(env, [BUY, SELL, BUY])
    # each decision is three bars: the action's bar, then two holds; the reward is their sum
    assert rewards == pytest.approx([sum(per_bar[i : i + 3]) for i in (0, 3, 6)], rel=1e-6)
    assert env.current_bar(0) == every.current_bar(0) == 9
    assert env.trades(0) == every.trades(0)
    assert np.array_equal(env.equity_curve(0), every.equity_curve(0))
    # the last decision has one bar left: the episode ends there, truncated, after that bar
    _, r, term, trunc, _ = env.step(np.array([SELL]))
    _, r1, _, trunc1, _ = every.step(np.array([SELL]))
    assert (bool(term[0]), bool(trunc[0]), bool(trunc1[0])) == (False, True, True)
    assert float(r[0]) == pytest.approx(float(r1[0])) and env.current_bar(0) == 10


def test_decision_interval_never_holds_back_a_stop() -> None:
    bars = [FLAT, FLAT, (99.0, 99.5, 97.0, 98.5), FLAT, FLAT, FLAT, FLAT]
    env = env_with(bars, decision_interval=3)
    run(env, [BUY])
    (trade,) = env.trades(0)  # bought at bar 1's open, stopped inside bar 2 of the interval
    assert (trade["entry_bar"], trade["exit_bar"], trade["reason"]) == (1, 2, "stop")
    assert env.current_bar(0) == 3


def test_decision_interval_in_a_batch_equals_its_bars_stepped_one_by_one() -> None:
    """Envs whose episodes end inside an interval stop there while the others step on; each
    decision's reward is the sum over its bars and the end flags are those of the bars."""
    bars = drifting_bars(40)
    config = market_config(episode_length=7)
    coarse = VecMarketEnv(bars_market(bars), replace(config, env=replace(
        config.env, decision_interval=3)), num_envs=3, autoreset=False, record=True)  # fmt: skip
    fine = VecMarketEnv(bars_market(bars), config, num_envs=3, autoreset=False, record=True)
    starts = {"starts": [4, 35, 37]}  # episodes of 7, 4 (to the data end) and 2 bars
    coarse.reset(options=starts)
    fine.reset(options=starts)
    rng = np.random.default_rng(0)
    done = np.zeros(3, dtype=bool)
    for _ in range(3):  # decisions of 3, 3 and 1 bars; of 3 and 1; of 2
        acts = rng.integers(0, 3, size=3)
        _, r, term, trunc, _ = coarse.step(acts)
        total, ended = np.zeros(3), np.zeros(3, dtype=bool)
        for j in range(3):
            if (done | ended).all():
                break
            _, r1, t1, u1, _ = fine.step(np.where(ended | done, 0, acts if j == 0 else 0))
            total += r1
            ended |= t1 | u1
        assert np.allclose(r, total, rtol=1e-5)
        assert np.array_equal(term | trunc, ended)
        done |= ended
        assert np.array_equal(coarse.current_bars(), fine.current_bars())
    assert done.all()
    for n in range(3):
        assert coarse.trades(n) == fine.trades(n)
        assert np.array_equal(coarse.equity_curve(n), fine.equity_curve(n))


def test_decision_interval_autoreset_keeps_the_final_observation() -> None:
    bars = drifting_bars(40)
    config = market_config(episode_length=5)
    config = replace(config, env=replace(config.env, decision_interval=3, random_start=True))
    env = VecMarketEnv(bars_market(bars), config, num_envs=2, seed=3)
    env.reset()
    env.step(np.array([BUY, HOLD]))
    _, _, _, trunc, info = env.step(np.array([HOLD, HOLD]))  # bars 4 and 5: the end at 5
    assert trunc.all() and info["_final_obs"].all()
    assert np.array_equal(info["episode"]["l"], [5, 5])


def test_decision_interval_is_checked() -> None:
    from nexlify.config import EnvConfig
    from nexlify.errors import ConfigError

    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match=r"env\.decision_interval"):
            EnvConfig(decision_interval=bad)  # type: ignore[arg-type]
