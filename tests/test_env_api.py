"""The simulator as a whole: look-ahead, probe market, batching, Gymnasium API, real data."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import nexlify  # registers nexlify/Trading-v0
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.market_data import build_market_data
from nexlify.data.sources import market_from_files, synthetic_market
from nexlify.data.synthetic import generate_synthetic_candles, synthetic_trend_candles
from nexlify.market.baselines import run_baselines
from nexlify.market.env import VecMarketEnv
from nexlify.market.evaluate import evaluate_policy
from nexlify.market.metrics import compute_metrics
from tests.helpers import assert_threaded_matches_serial, shared_data_or_skip

PAIRS = ("BTC/USDT", "ETH/USDT")


@pytest.fixture(scope="module")
def market() -> nexlify.data.market_data.MarketData:
    return synthetic_market(PAIRS, "1h", seed=3, days=120)


def rollout_obs(env: VecMarketEnv, actions: np.ndarray, starts: list[int]) -> np.ndarray:
    obs, _ = env.reset(options={"starts": starts})
    seen = [obs.copy()]
    for a in actions:
        obs, _, term, trunc, _ = env.step(a)
        seen.append(obs.copy())
        if (term | trunc).all():
            break
    return np.stack(seen)


def test_observations_do_not_look_ahead() -> None:
    """Cutting the raw candles after bar t leaves every observation up to t unchanged."""
    frames = generate_synthetic_candles(list(PAIRS), "1h", n_bars=1500, seed=11)
    full = build_market_data(frames, "1h", source="synthetic")
    cut_at = 1300  # raw bars kept in the cut market
    cut = build_market_data({p: f.iloc[:cut_at] for p, f in frames.items()}, "1h", "synthetic")
    assert cut.time[0] == full.time[0]
    cfg = MarketConfig(env=EnvConfig(episode_length=0, random_start=False, obs_window=4))
    rng = np.random.default_rng(0)
    steps = cut.n_bars - 10
    actions = rng.integers(0, 5, size=(steps, 1))
    obs_full = rollout_obs(VecMarketEnv(full, cfg, autoreset=False), actions, [3])
    obs_cut = rollout_obs(VecMarketEnv(cut, cfg, autoreset=False), actions, [3])
    n = min(len(obs_cut), steps) - 1  # the cut run's last step liquidates at its end; skip it
    np.testing.assert_array_equal(obs_full[:n], obs_cut[:n])
    np.testing.assert_array_equal(full.features[: cut.n_bars], cut.features)


def test_probe_uptrend_rewards_going_long() -> None:
    frames = synthetic_trend_candles(["UP/USDT"], "1h", n_bars=1200, drift_per_bar=0.001, seed=0)
    data = build_market_data(frames, "1h", source="probe")
    cfg = MarketConfig(env=EnvConfig(episode_length=0, random_start=False))
    results = run_baselines(data, cfg, episode_length=0)
    flat = evaluate_policy(lambda o, e: np.zeros(e.num_envs, np.int64), data, cfg, episode_length=0)
    long_ret = results["always_long"].metrics[0].total_return_pct
    assert long_ret > 0.5
    assert flat.metrics[0].total_return_pct == 0.0
    assert long_ret > results["random"].metrics[0].total_return_pct


def test_batched_envs_match_single_envs(market) -> None:  # type: ignore[no-untyped-def]
    cfg = MarketConfig(env=EnvConfig(episode_length=200, random_start=False))
    rng = np.random.default_rng(5)
    starts = [0, 150, 400, 777]
    actions = rng.integers(0, 5, size=(200, 4))
    batch = rollout_obs(VecMarketEnv(market, cfg, num_envs=4, autoreset=False), actions, starts)
    for i, s in enumerate(starts):
        single = rollout_obs(VecMarketEnv(market, cfg, autoreset=False), actions[:, i : i + 1], [s])
        np.testing.assert_array_equal(batch[:, i], single[:, 0])


def test_parallel_kernel_matches_serial_kernel(market) -> None:  # type: ignore[no-untyped-def]
    cfg = MarketConfig(env=EnvConfig(episode_length=100))
    assert_threaded_matches_serial(lambda: VecMarketEnv(market, cfg, num_envs=64, seed=9))


def test_same_seed_same_episodes(market) -> None:  # type: ignore[no-untyped-def]
    def run(seed: int) -> np.ndarray:
        env = VecMarketEnv(market, MarketConfig(env=EnvConfig(episode_length=50)), 8, seed=seed)
        env.reset()
        rng = np.random.default_rng(0)
        total = np.zeros(8)
        for _ in range(120):
            _, r, _, _, _ = env.step(rng.integers(0, 5, 8))
            total += r
        return total

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_same_step_autoreset_reports_final_obs_and_episode(market) -> None:  # type: ignore[no-untyped-def]
    env = VecMarketEnv(market, MarketConfig(env=EnvConfig(episode_length=5)), num_envs=3, seed=0)
    env.reset()
    for _ in range(4):
        _, _, _, trunc, info = env.step(np.zeros(3, np.int64))
        assert not trunc.any() and not info
    obs, _, term, trunc, info = env.step(np.ones(3, np.int64))
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all() and info["final_obs"].shape == obs.shape
    assert not np.array_equal(info["final_obs"], obs)  # obs is already the next episode's
    assert set(info["episode"]) >= {"r", "l", "return_pct", "trades"}
    np.testing.assert_array_equal(info["episode"]["l"], [5, 5, 5])


def test_running_metrics_match_the_recorded_equity_curve(market) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    result = evaluate_policy(
        lambda o, e: rng.integers(0, e.n_actions, e.num_envs), market, MarketConfig()
    )
    assert len(result.metrics) >= 2
    for m, curve, trades in zip(result.metrics, result.equity_curves, result.trades, strict=True):
        pnl = np.array([t["pnl"] for t in trades])
        ref = compute_metrics(curve, pnl, m.fees_paid, m.exposure, "1h")
        assert m.total_return_pct == pytest.approx(ref.total_return_pct, rel=1e-9, abs=1e-9)
        assert m.sharpe == pytest.approx(ref.sharpe, rel=1e-6, abs=1e-9)
        assert m.sortino == pytest.approx(ref.sortino, rel=1e-6, abs=1e-9)
        assert m.max_drawdown_pct == pytest.approx(ref.max_drawdown_pct, rel=1e-9, abs=1e-9)
        assert m.win_rate == pytest.approx(ref.win_rate)
        assert m.n_trades == len(trades)


def test_gymnasium_single_env_passes_check_env() -> None:
    env = gym.make("nexlify/Trading-v0", pairs=["BTC/USDT"], env={"episode_length": 50})
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, _, _, info = env.step(1)
    assert isinstance(reward, float) and "equity" in info


def test_gymnasium_make_vec_returns_the_native_batched_env() -> None:
    vec = gym.make_vec("nexlify/Trading-v0", num_envs=16, vectorization_mode="vector_entry_point",
                       pairs=["BTC/USDT"], env={"episode_length": 30})  # fmt: skip
    assert isinstance(vec, VecMarketEnv)
    assert isinstance(vec, gym.vector.VectorEnv)
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (16, vec.obs_size)
    obs, r, term, _, _ = vec.step(vec.action_space.sample())
    assert r.shape == (16,) and term.dtype == np.bool_


def test_gym_env_accepts_a_dataframe() -> None:
    frame = generate_synthetic_candles(["BTC/USDT"], "1h", n_bars=800, seed=0)["BTC/USDT"]
    env = gym.make("nexlify/Trading-v0", data=frame.reset_index(), env={"episode_length": 20})
    market = env.unwrapped.market  # type: ignore[attr-defined]
    assert market.pairs == ("BTC/USDT",) and market.timeframe == "1h"
    # the frame's own candles, after the feature warm-up, are what the env trades on
    np.testing.assert_array_equal(
        market.prices[:, 0, 3], frame["close"].to_numpy(np.float32)[-market.n_bars :]
    )
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    start = info["equity"]
    obs, reward, terminated, truncated, info = env.step(0)  # hold: no trade, no cost
    assert info["equity"] == start and reward == 0.0 and not (terminated or truncated)


def test_stable_baselines3_trains_on_the_single_env() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    env = gym.make("nexlify/Trading-v0", pairs=["BTC/USDT"], env={"episode_length": 64})
    model = sb3.DQN("MlpPolicy", env, learning_starts=64, buffer_size=1000, seed=0, device="cpu")
    model.learn(total_timesteps=300)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(int(action))


def test_real_binance_candles_run_an_episode_with_every_rule_on() -> None:
    path = shared_data_or_skip("market", "binance")
    data = market_from_files(path, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], "1h")
    assert data.n_pairs == 3 and data.n_bars > 30_000
    assert data.filled.sum() == 21  # 7 bars missing from all three files (outages), filled flat
    cfg = replace(MarketConfig(), env=EnvConfig(episode_length=2000))
    env = VecMarketEnv(data, cfg, num_envs=4, seed=0, record=True, autoreset=False)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        env.step(rng.integers(0, env.n_actions, 4))
    for i in range(4):
        m = env.episode_metrics(i)
        assert m.n_trades > 0 and np.isfinite(m.final_equity)
        reasons = {t["reason"] for t in env.trades(i)}
        assert reasons & {"stop", "trail", "take"}


def test_state_round_trip_and_growing_data_match_a_full_run(market) -> None:  # type: ignore[no-untyped-def]
    """Stepping bar by bar on growing data (as paper trading does) equals one run on all bars."""
    cfg = MarketConfig(env=EnvConfig(episode_length=0, random_start=False, close_at_end=False))
    rng = np.random.default_rng(3)
    actions = rng.integers(0, 5, size=300)
    full = VecMarketEnv(market, cfg, autoreset=False, record=True)
    full.reset()
    full.run_open_ended()
    for a in actions:
        full.step(np.array([a]))
    grow = VecMarketEnv(market.slice(0, 2), cfg, autoreset=False, record=True)
    grow.reset()
    grow.run_open_ended()
    for k, a in enumerate(actions):
        if k == 150:  # a restart: a fresh env restored from the saved state
            state = grow.state_dict()
            grow = VecMarketEnv(market.slice(0, k + 1), cfg, autoreset=False, record=True)
            grow.load_state_dict(state)
        grow.replace_data(market.slice(0, k + 2))
        grow.step(np.array([a]))
    assert grow.account(0) == full.account(0)
    assert grow.trades(0) == full.trades(0)
    with pytest.raises(Exception, match="no next bar"):
        grow.step(np.array([0]))
