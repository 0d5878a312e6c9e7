"""Strategies: env speed with every strategy on vs spot only, and the real-candle arbitrage scan.

    .venv/bin/python benchmarks/bench_strategies.py [--rounds 5] [--seconds 1] [--out FILE.json]
        [--per-strategy]

1. Env-steps per second of ``VecMarketEnv`` at N = 1, 256 and 4096 with spot only (the default
   ``MarketConfig``) and with ``spot staking lending liquidity arbitrage`` (simulated lending
   utilisation, arbitrage in rule mode against one more venue), on the synthetic BTC/ETH/SOL
   market and, when ``../shared/data`` is present, on Binance candles with KuCoin as the second
   venue. Random actions drawn up front; configurations timed in interleaved rounds (medians);
   the slowdown is given as the ratio of medians and as the median (IQR, and a 95% bootstrap
   interval) of the per-round ratios, spot and all being timed back to back in each round.
   With ``--per-strategy``, each strategy alone on top of spot is timed as well (synthetic market,
   N = 256 and 4096), to show which one the all-strategies cost comes from.
2. The arbitrage scan over Binance and KuCoin 1h candles (2023-11 .. 2024-12 overlap) for
   BTC, ETH and SOL: bars where the best open-price spread beat both taker fees plus slippage,
   and what trading a fixed notional into each would have earned, at several cost levels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.config import MarketConfig, from_dict, to_dict
from nexlify.data.market_data import MarketData
from nexlify.data.sources import market_from_files, synthetic_market
from nexlify.evaluation.stats import bootstrap_ci
from nexlify.market.env import VecMarketEnv
from nexlify.market.strategies.arbitrage import load_alignment, scan_alignment

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "market"
PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
ALL = ["spot", "staking", "lending", "liquidity", "arbitrage"]


def all_strategies(venue_dir: Path | None, enabled: list[str] = ALL) -> MarketConfig:
    values = to_dict(MarketConfig())
    values["strategies"]["enabled"] = enabled
    values["strategies"]["lending"]["utilization_source"] = "simulated"
    if venue_dir is not None:
        values["strategies"]["arbitrage"]["venues"] = [f"kucoin={venue_dir}"]
    return from_dict(MarketConfig, values)


class EnvTimer:
    """A warmed-up env with pre-drawn random actions, timed in short rounds."""

    def __init__(self, data: MarketData, config: MarketConfig, num_envs: int) -> None:
        self.env = VecMarketEnv(data, config, num_envs=num_envs, seed=0, copy_obs=False)
        rng = np.random.default_rng(0)
        self.pool = rng.integers(0, self.env.n_actions, size=(64, num_envs), dtype=np.int64)
        self.env.reset()
        for i in range(20):
            self.env.step(self.pool[i % 64])

    def round(self, seconds: float) -> float:
        env, pool = self.env, self.pool
        steps = 0
        start = time.perf_counter()
        while time.perf_counter() < start + seconds:
            for i in range(64):
                env.step(pool[i])
            steps += 64
        return steps * env.num_envs / (time.perf_counter() - start)


def speed(
    markets: dict[str, tuple[MarketData, Path | None]], rounds: int, seconds: float
) -> dict[str, Any]:
    timers: dict[str, EnvTimer] = {}
    for name, (data, venue) in markets.items():
        for n in (1, 256, 4096):
            timers[f"{name} spot N={n}"] = EnvTimer(data, MarketConfig(), n)
            timers[f"{name} all N={n}"] = EnvTimer(data, all_strategies(venue), n)
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(rounds):
        for key, timer in timers.items():
            samples[key].append(timer.round(seconds))
    results: dict[str, Any] = {}
    for key, values in samples.items():
        results[key] = {
            "median_env_steps_per_s": round(statistics.median(values)),
            "rounds": [round(v) for v in values],
        }
    ratios, paired = {}, {}
    for name in markets:
        for n in (1, 256, 4096):
            spot = results[f"{name} spot N={n}"]["median_env_steps_per_s"]
            both = results[f"{name} all N={n}"]["median_env_steps_per_s"]
            ratios[f"{name} N={n}"] = round(spot / both, 3)
            # Each round times spot and all back to back, so the per-round ratio cancels most
            # of the load drift between rounds that a ratio of medians keeps.
            per_round = [
                a / b
                for a, b in zip(
                    samples[f"{name} spot N={n}"], samples[f"{name} all N={n}"], strict=True
                )
            ]
            q1, med, q3 = np.percentile(per_round, [25, 50, 75])
            low, high = bootstrap_ci(per_round, np.median, n_resamples=10_000)
            paired[f"{name} N={n}"] = {"median": round(float(med), 3),
                                       "iqr": [round(float(q1), 3), round(float(q3), 3)],
                                       "median_ci95": [round(low, 3), round(high, 3)],
                                       "rounds": [round(r, 3) for r in per_round]}  # fmt: skip
    return {
        "results": results,
        "spot_over_all_ratio": ratios,
        "spot_over_all_ratio_paired": paired,
        "within_2x": all(r <= 2.0 for r in ratios.values()),
        "within_2x_paired_median": all(p["median"] <= 2.0 for p in paired.values()),
        "within_2x_paired_median_whole_ci95": all(
            p["median_ci95"][1] <= 2.0 for p in paired.values()
        ),
    }


def per_strategy(data: MarketData, rounds: int, seconds: float) -> dict[str, Any]:
    """Each strategy alone on top of spot, and all of them, against spot only (paired per round),
    at N = 256 (one thread) and N = 4096 (numba's threads): where the all-strategies cost goes."""
    out: dict[str, Any] = {}
    for n in (256, 4096):
        timers = {"spot": EnvTimer(data, MarketConfig(), n)}
        for name in ALL[1:]:
            timers[f"+{name}"] = EnvTimer(data, all_strategies(None, ["spot", name]), n)
        timers["all"] = EnvTimer(data, all_strategies(None), n)
        samples: dict[str, list[float]] = {k: [] for k in timers}
        for _ in range(rounds):
            for key, timer in timers.items():
                samples[key].append(timer.round(seconds))
        out[f"N={n}"] = {
            key: {
                "median_env_steps_per_s": round(statistics.median(values)),
                "slowdown_vs_spot_paired_median": round(
                    statistics.median(s / v for s, v in zip(samples["spot"], values, strict=True)),
                    3,
                ),
            }
            for key, values in samples.items()
        }
    return out


COSTS = (
    ("taker 0.1% + 5 bp slippage (env default)", 0.001, 5.0),
    ("taker 0.1%, no slippage", 0.001, 0.0),
    ("VIP/maker 0.02%, no slippage", 0.0002, 0.0),
)


def arbitrage_scan(notional: float) -> dict[str, Any]:
    folders = {"binance": str(SHARED / "binance"), "kucoin": str(SHARED / "kucoin")}
    out: dict[str, Any] = {"notional_quote": notional, "venues": folders, "pairs": {}}
    for pair in PAIRS:
        alignment = load_alignment(folders, pair, "1h")
        out["pairs"][pair] = {"alignment_notes": list(alignment.notes), "costs": {}}
        for label, fee, slip in COSTS:
            scan = scan_alignment(
                alignment,
                pair,
                {"binance": fee, "kucoin": fee},
                slippage_bps=slip,
                notional=notional,
            )
            out["pairs"][pair]["costs"][label] = scan.to_dict()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--notional", type=float, default=10_000.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "strategies.json"))
    parser.add_argument(
        "--per-strategy",
        action="store_true",
        help="also time each strategy alone on top of spot (synthetic market)",
    )
    args = parser.parse_args()
    markets: dict[str, tuple[MarketData, Path | None]] = {
        "synthetic": (synthetic_market(PAIRS, "1h", seed=0, days=730), None),
    }
    real = (SHARED / "binance").is_dir() and (SHARED / "kucoin").is_dir()
    if real:
        markets["binance_real"] = (
            market_from_files(SHARED / "binance", PAIRS, "1h"),
            SHARED / "kucoin",
        )
    report: dict[str, Any] = {
        "command": "python benchmarks/bench_strategies.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.machine(),
        },
        "config": "spot = MarketConfig() defaults; all = spot staking lending liquidity "
        "arbitrage (ETH staking, simulated utilisation, LP on BTC/USDT, rule-mode arbitrage on a "
        "second venue: simulated on synthetic data, KuCoin candles on Binance data); 3 pairs; "
        f"random actions; {args.rounds} interleaved rounds of {args.seconds}s",
    }
    load_before = os.getloadavg()
    report["speed"] = speed(markets, args.rounds, args.seconds)
    if args.per_strategy:
        report["per_strategy_synthetic"] = per_strategy(
            markets["synthetic"][0], args.rounds, args.seconds
        )
    report["machine"]["load_avg_1_5_15_min"] = {  # the benchmark's own threads count too
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    if real:
        report["arbitrage_scan_binance_kucoin_1h"] = arbitrage_scan(args.notional)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["speed"], indent=2))
    for n, table in report.get("per_strategy_synthetic", {}).items():
        for key, row in table.items():
            print(f"{n} {key:12s} {row['median_env_steps_per_s'] / 1e6:6.2f}M env-steps/s, "
                  f"x{row['slowdown_vs_spot_paired_median']:.2f} vs spot")  # fmt: skip
    if real:
        for pair, entry in report["arbitrage_scan_binance_kucoin_1h"]["pairs"].items():
            for label, scan in entry["costs"].items():
                print(
                    f"{pair} {label}: {scan['opportunities']}/{scan['bars']} bars, earned "
                    f"{scan['earned']:.2f} ({scan['earned_after_transfers']:.2f} after "
                    "transfers)"
                )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
