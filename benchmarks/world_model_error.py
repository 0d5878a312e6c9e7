"""Out-of-sample error of the learned market model beside persistence, on real candles.

    .venv/bin/python benchmarks/world_model_error.py [--timeframe 4h] [--seeds 3]

Fits :class:`nexlify.train.world_model.WorldModel` on transitions collected with uniformly random
actions on Binance BTC/USDT and ETH/USDT candles before 2023 (``../shared/data/history/binance``;
skipped with a message when absent), then scores it on transitions collected the same way over
2023, which it never saw: mean squared error of the next bar's features and of the reward, beside
persistence (next features = current, reward = 0) and the training average of the next
features. Writes ``benchmarks/results/world_model_error.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.market.env import VecMarketEnv
from nexlify.pipeline.data_choice import checked_market_from_files
from nexlify.train.config import DataConfig
from nexlify.train.world_model import MarketLayout, WorldModel, WorldModelConfig, prediction_error

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "history" / "binance"
PAIRS = ("BTC/USDT", "ETH/USDT")
OUT = ROOT / "benchmarks" / "results" / "world_model_error.json"

Transitions = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def collect(data: MarketData, market: MarketConfig, num_envs: int, steps: int, seed: int,
            ) -> Transitions:  # fmt: skip
    """``steps`` vector steps of random actions; the true next observation at episode ends."""
    env = VecMarketEnv(data, market, num_envs, seed=seed)
    rng = np.random.default_rng([seed, 1])
    obs, _ = env.reset()
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for _ in range(steps):
        actions = rng.integers(0, env.n_actions, size=num_envs)
        new_obs, rewards, _, _, info = env.step(actions)
        next_obs = new_obs.copy()
        if "final_obs" in info:
            rows = info["_final_obs"]
            next_obs[rows] = info["final_obs"][rows]
        for part, value in zip(parts, (obs, actions, next_obs, rewards), strict=True):
            part.append(np.asarray(value).copy())
        obs = new_obs
    return tuple(np.concatenate(p) for p in parts)  # type: ignore[return-value]


def per_feature(model: WorldModel, names: tuple[str, ...], test: Transitions) -> dict[str, Any]:
    """MSE of model, persistence and training average for each feature name (pairs pooled)."""
    obs, actions, next_obs, _ = test
    layout = model.layout
    pred = model.predict(obs, actions).features_BK.reshape(len(obs), layout.n_pairs, -1)
    actual = layout.current_features(next_obs).reshape(pred.shape)
    current = layout.current_features(obs).reshape(pred.shape)
    mean = model.next_feature_mean.reshape(1, layout.n_pairs, -1)
    out = {}
    for f, name in enumerate(names):
        a = actual[..., f]
        out[name] = {
            "model": round(float(np.mean((pred[..., f] - a) ** 2)), 5),
            "persistence": round(float(np.mean((current[..., f] - a) ** 2)), 5),
            "train_mean": round(float(np.mean((mean[..., f] - a) ** 2)), 5),
        }
    return out


def _when(unix_s: np.int64) -> str:
    return str(np.datetime64(int(unix_s), "s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeframe", default="4h")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (real candles needed)")
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = DataConfig(pairs=PAIRS, timeframe=args.timeframe, data_dir=str(SHARED))
    data = checked_market_from_files(SHARED, config)
    cut, end = data.index_at("2023-01-01"), data.index_at("2024-01-01")
    train, test = data.slice(0, cut), data.slice(cut, end)
    episode = MarketConfig(env=EnvConfig(episode_length=720))
    whole_year = MarketConfig(env=EnvConfig(episode_length=0))
    train_steps = 60_000 // 16
    fit_set = collect(train, episode, 16, train_steps, seed=0)
    test_set = collect(test, whole_year, 8, test.n_bars - 1, seed=1)
    layout = MarketLayout(episode.env.obs_window, train.n_pairs, train.n_features)
    n_actions = 1 + 2 * train.n_pairs
    results = []
    model = None
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        model = WorldModel(fit_set[0].shape[1], n_actions, layout, seed=seed)
        loss = model.fit(*fit_set)
        error = prediction_error(model, *test_set)
        results.append({"seed": seed, "fit_seconds": round(time.perf_counter() - t0, 1),
                        "fit_loss": round(loss, 4), **error.as_dict()})  # fmt: skip
        print(results[-1], flush=True)
    assert model is not None
    mean = {k: float(np.mean([r[k] for r in results])) for k in results[0] if k != "seed"}
    report = {
        "what": "MSE of the learned market model vs persistence on 2023 (never trained on)",
        "command": "python benchmarks/world_model_error.py " + " ".join(sys.argv[1:]),
        "data": {
            "source": str(SHARED.relative_to(ROOT.parent)),
            "pairs": list(PAIRS),
            "timeframe": args.timeframe,
            "features": list(train.feature_names),
        },
        "train_bars": [_when(train.time[0]), _when(train.time[-1])],
        "test_bars": [_when(test.time[0]), _when(test.time[-1])],
        "policy": "uniform random actions (default risk rules and costs)",
        "transitions": {"train": len(fit_set[0]), "test": len(test_set[0])},
        "model": asdict(WorldModelConfig()),
        "per_seed": results,
        "mean_over_seeds": mean,
        "model_vs_persistence": {
            "feature_mse_ratio": mean["feature_mse"] / mean["feature_mse_persistence"],
            "reward_mse_ratio": mean["reward_mse"] / mean["reward_mse_persistence"],
            "feature_mse_ratio_to_train_mean": mean["feature_mse"] / mean["feature_mse_mean"],
        },
        "per_feature_last_seed": per_feature(model, train.feature_names, test_set),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.platform(),
        "torch_threads": 1,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["model_vs_persistence"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
