"""Env speed of this tree against an earlier revision, run alternately in the same session.

    .venv/bin/python benchmarks/bench_env_ab.py --base REV [--pairs 2] [--rounds 5] [--out FILE]

Figures from different days of a shared VM differ by up to 1.7x, so a kernel change is judged
here by running the old and the new code back to back: ``REV`` is checked out in a temporary
git worktree and each measurement runs in a fresh process importing ``nexlify`` from either that
worktree's ``src`` or this tree's, alternating (base, head, base, head, ...). Each process times
``VecMarketEnv`` with random actions (the ``EnvTimer`` of ``bench_strategies.py``) for spot only
at N = 1, 256, 4096 and with every strategy at N = 256, 4096, in interleaved rounds, and reports
medians. Binance candles (with KuCoin as the arbitrage venue) when ``../shared/data`` is
present, else the synthetic market. Writes ``benchmarks/results/env_kernel_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "env_kernel_ab.json"


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    """In a child process: medians of env-steps/s for each configuration."""
    sys.path.insert(0, str(HERE))
    import nexlify
    from bench_strategies import PAIRS, SHARED, EnvTimer, all_strategies
    from nexlify.config import MarketConfig
    from nexlify.data.sources import market_from_files, synthetic_market

    if SHARED.is_dir():
        data = market_from_files(SHARED / "binance", PAIRS, "1h")
        venue: Path | None = SHARED / "kucoin"
    else:
        data, venue = synthetic_market(PAIRS, "1h", seed=0, days=500), None
    timers = {f"spot N={n}": EnvTimer(data, MarketConfig(), n) for n in (1, 256, 4096)}
    timers |= {f"all N={n}": EnvTimer(data, all_strategies(venue), n) for n in (256, 4096)}
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer.round(seconds))
    return {
        "nexlify_from": str(Path(nexlify.__file__).resolve().parents[1]),
        "market": "binance_real" if venue is not None else "synthetic",
        "median_env_steps_per_s": {k: round(statistics.median(v)) for k, v in samples.items()},
    }


def run_side(src: Path, rounds: int, seconds: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--one", "--rounds", str(rounds), "--seconds", str(seconds)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {src} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["nexlify_from"]) != src.resolve():
        raise RuntimeError(f"the child imported nexlify from {result['nexlify_from']}, not {src}")
    return result


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the earlier revision (any git revision name)")
    parser.add_argument("--pairs", type=int, default=2, help="base/head run pairs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.rounds, args.seconds)))
        return
    if not args.base:
        parser.error("--base REV is required")
    try:
        base_rev = git("rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    except subprocess.CalledProcessError:
        parser.error(f"--base {args.base}: not a commit of this repository")
    head_rev = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    runs: dict[str, list[dict[str, int]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="nexlify-ab-") as tmp:
        worktree = Path(tmp) / "base"
        git("worktree", "add", "--detach", str(worktree), base_rev)
        try:
            for i in range(args.pairs):
                for side, src in (("base", worktree / "src"), ("head", ROOT / "src")):
                    result = run_side(src, args.rounds, args.seconds)
                    runs[side].append(result["median_env_steps_per_s"])
                    print(f"[{i}] {side}: " + ", ".join(
                        f"{k} {v / 1e6:.2f}M" for k, v in result["median_env_steps_per_s"].items()
                    ))  # fmt: skip
        finally:
            git("worktree", "remove", "--force", str(worktree))
    out = {
        "what": "env-steps/s of VecMarketEnv: an earlier revision (base) against this tree (head), "
        "fresh processes run alternately in the same session",
        "command": "python benchmarks/bench_env_ab.py " + " ".join(sys.argv[1:]),
        "base": base_rev,
        "head": head_rev + (" (with uncommitted changes)" if dirty else ""),
        "market": result["market"],
        "config": f"random actions; {args.rounds} interleaved rounds of {args.seconds}s per "
        "configuration, medians per run; 'all' = spot staking lending liquidity arbitrage "
        "(simulated lending utilisation, KuCoin as the arbitrage venue on real data)",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
