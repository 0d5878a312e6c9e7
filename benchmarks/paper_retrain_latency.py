"""Decision latency of a paper session with and without a rolling retrain running.

    .venv/bin/python benchmarks/paper_retrain_latency.py [--bars 240] [--pace 0.05]

A poll-like session (the loop never waits for a retrain) over recorded 1h candles of BTC/USDT and
ETH/USDT (``../shared/data/market/binance``; synthetic candles when absent), the bars handed over
one at a time ``--pace`` seconds apart. Per bar, the time of ``PaperTrader.process`` is measured:
the features rebuilt, the simulator stepped, the model's decision and the bar's transaction (and,
with retraining, the check for a result and, after a retrain bar, starting the background
process). Run once with retraining off and once with ``--retrain-every`` 1 day, so that a
fine-tune runs in a spawned process during most bars. Writes
``benchmarks/results/paper_retrain_latency.json``: percentiles over all bars, and over the bars
decided while a retrain was running.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.candles import read_candles
from nexlify.data.features import FEATURE_WARMUP
from nexlify.data.market_data import build_market_data
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.evaluation.backtest import load_model_for_backtest
from nexlify.io import atomic_write_json
from nexlify.live.feeds import Bar, ReplayFeed
from nexlify.live.session import SessionSettings, open_session
from nexlify.market.env import VecMarketEnv
from nexlify.pipeline.rolling import RollingSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "market" / "binance"
OUT = ROOT / "benchmarks" / "results" / "paper_retrain_latency.json"
PAIRS = ("BTC/USDT", "ETH/USDT")
MARKET = MarketConfig(env=EnvConfig(episode_length=168))
SPEC = RollingSpec(every_days=1.0, window_days=10.0, score_days=1.0, episodes=6)


def load_frames(n_bars: int) -> tuple[dict[str, pd.DataFrame], str]:
    if SHARED.is_dir():
        frames = {}
        for pair in PAIRS:
            frame = read_candles(SHARED / f"{pair.replace('/', '_')}-1h.csv")
            frames[pair] = frame[frame.index < pd.Timestamp("2024-12-01", tz="UTC")].iloc[-n_bars:]
        return frames, f"binance 1h {SHARED}"
    return generate_synthetic_candles(PAIRS, "1h", n_bars, seed=3), "synthetic 1h"


def save_model(path: Path, frames: dict[str, pd.DataFrame]) -> None:
    """An untrained network of the default agent's shape, with the market it trades."""
    data = build_market_data(frames, "1h", "bench")
    env = VecMarketEnv(data, MARKET)
    agent = DQNAgent(env.obs_size, env.n_actions, AgentConfig(), seed=1)
    extra = {"market_config": dataclasses.asdict(MARKET), "pairs": list(PAIRS),
             "timeframe": "1h", "feature_names": list(data.feature_names)}  # fmt: skip
    agent.save(path, extra=extra)


class PacedFeed:
    """Poll-like: ``history`` closed bars at the start, then one bar per call."""

    name = "poll"

    def __init__(self, bars: list[Bar], history: int) -> None:
        self.bars, self.history = bars, history

    def initial_bars(self) -> list[Bar]:
        return self.bars[: self.history]


def run(model: Path, bars: list[Bar], history: int, retrain: RollingSpec | None, db: Path,
        pace: float) -> dict[str, Any]:  # fmt: skip
    agent, spec = load_model_for_backtest(model)
    settings = SessionSettings(db=db, model_path=str(model), feed="poll", retrain=retrain)
    store, trader = open_session(settings, agent, spec, PacedFeed(bars, history))  # type: ignore[arg-type]
    times: list[float] = []
    busy: list[bool] = []
    launched: list[bool] = []
    recorded: list[bool] = []
    retrainer = trader.retrainer
    try:
        for bar in bars[history:]:
            before = None if retrainer is None else retrainer.summary()
            tick = time.perf_counter()
            trader.process([bar])
            times.append(time.perf_counter() - tick)
            after = None if retrainer is None else retrainer.summary()
            busy.append(before is not None and before["running"] is not None)
            launched.append(after is not None and after["running"] != before["running"]
                            and after["running"] is not None)  # fmt: skip
            recorded.append(after is not None and after["recorded"] != before["recorded"])
            time.sleep(pace)
        retrains = store.retrains()
    finally:
        if trader.retrainer is not None:
            trader.retrainer.close()
        store.close()
    ms = np.asarray(times) * 1000.0
    during = ms[np.asarray(busy, dtype=bool)]
    return {
        "bars": len(ms),
        "all_bars_ms": percentiles(ms),
        "bars_during_a_retrain": len(during),
        "during_a_retrain_ms": percentiles(during) if len(during) else None,
        "bars_that_started_a_retrain_ms": [round(float(t), 2) for t in ms[np.asarray(launched)]],
        "bars_that_recorded_a_result_ms": [round(float(t), 2) for t in ms[np.asarray(recorded)]],
        "retrains_finished": len(retrains),
        "retrain_seconds": [round(r["seconds"], 2) for r in retrains],
        "swapped": sum(r["swapped"] for r in retrains),
    }


def percentiles(ms: np.ndarray) -> dict[str, float]:
    q = np.percentile(ms, [50, 90, 99])
    return {"p50": round(float(q[0]), 2), "p90": round(float(q[1]), 2),
            "p99": round(float(q[2]), 2), "max": round(float(ms.max()), 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=240, help="bars measured per run")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between bars")
    args = parser.parse_args()
    every, window, score = SPEC.bars(3600)
    history = FEATURE_WARMUP + window + score + 2
    frames, source = load_frames(history + args.bars)
    bars = ReplayFeed(frames, "1h").bars
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt"
        save_model(model, frames)
        off = run(model, bars, history, None, Path(tmp) / "off.db", args.pace)
        on = run(model, bars, history, SPEC, Path(tmp) / "on.db", args.pace)
    result = {
        "what": "per-bar decision time (PaperTrader.process: features, simulator step, decision, "
        "transaction) of a poll-like session that never waits for a retrain; bars handed over "
        f"one at a time {args.pace} s apart",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, SHARED with other jobs "
        "(a long background study and other engineers' runs): absolute figures are noisy",
        "data": source,
        "model": "untrained default AgentConfig network, obs_window "
        f"{MARKET.env.obs_window}, episode_length {MARKET.env.episode_length}",
        "retrain": {**SPEC.to_dict(), "bars": {"every": every, "window": window, "score": score}},
        "retraining_off": off,
        "retraining_on": on,
        "seconds": round(time.perf_counter() - started, 1),
        "command": f"benchmarks/paper_retrain_latency.py --bars {args.bars} --pace {args.pace}",
    }
    atomic_write_json(OUT, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
